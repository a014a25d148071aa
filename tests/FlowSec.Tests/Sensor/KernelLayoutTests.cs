using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor;

/// <summary>
/// bpf/flowsec.h is the source of truth for kernel-to-user layouts: these tests compare the C#
/// mirrors with the BTF of the object the sensor actually embeds, and with the header's enums.
/// </summary>
public class KernelLayoutTests
{
    [Fact]
    public void Fs_tcp_record_matches_the_btf_of_the_embedded_object()
    {
        string btf = DumpEmbeddedObjectBtf(TcpCapture.ObjectName);

        var header = Regex.Match(btf, @"STRUCT 'fs_tcp_record' size=(\d+) vlen=(\d+)");
        header.Success.Should().BeTrue("the object's BTF must describe struct fs_tcp_record");
        int size = int.Parse(header.Groups[1].Value);
        int memberCount = int.Parse(header.Groups[2].Value);
        var members = btf[(header.Index + header.Length)..]
            .Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Take(memberCount)
            .Select(line => Regex.Match(line, @"^\s+'(\w+)' type_id=\d+ bits_offset=(\d+)"))
            .Select(m => (Name: m.Groups[1].Value, BitOffset: int.Parse(m.Groups[2].Value)))
            .ToList();

        members.Should().HaveCount(memberCount);
        size.Should().Be(136);
        Marshal.SizeOf<FsTcpRecord>().Should().Be(size);
        TcpRecordDecoder.RecordSize.Should().Be(size);
        typeof(FsTcpRecord).GetFields(BindingFlags.Public | BindingFlags.Instance).Select(f => f.Name)
            .Should().Equal(members.Select(m => m.Name), "the C# mirror must have the same fields in the same order");
        foreach (var (name, bitOffset) in members)
        {
            ((int)Marshal.OffsetOf<FsTcpRecord>(name) * 8).Should().Be(bitOffset, $"offset of {name}");
        }
    }

    [Fact]
    public void Record_kinds_and_counter_indexes_match_flowsec_h()
    {
        string header = File.ReadAllText(Path.Combine(RepoRoot(), "bpf", "flowsec.h"));

        EnumValue(header, "FS_RECORD_TCP_OPEN").Should().Be((long)RecordKind.TcpOpen);
        EnumValue(header, "FS_RECORD_TCP_CLOSE").Should().Be((long)RecordKind.TcpClose);
        EnumValue(header, "FS_COUNTER_RINGBUF_RESERVE_FAILED").Should().Be((long)KernelCounter.RingBufferReserveFailed);
        EnumValue(header, "FS_COUNTER_SOCKET_TABLE_FULL").Should().Be((long)KernelCounter.SocketTableFull);
        EnumValue(header, "FS_COMM_LEN", define: true).Should().Be(FsTcpRecord.CommLength);
    }

    [Fact]
    public void Tcp_states_match_the_running_kernel()
    {
        string btf = Run("bpftool", "btf dump file /sys/kernel/btf/vmlinux");

        foreach (TcpState state in Enum.GetValues<TcpState>().Where(s => s != TcpState.Unknown))
        {
            string name = "TCP_" + Regex.Replace(state.ToString(), "(?<=[a-z0-9])([A-Z])", "_$1").ToUpperInvariant();
            var m = Regex.Match(btf, $@"\s'{name}' val=(\d+)");
            m.Success.Should().BeTrue($"{name} must exist in the kernel's BTF");
            int.Parse(m.Groups[1].Value).Should().Be((int)state, name);
        }
    }

    internal static string DumpEmbeddedObjectBtf(string resourceName)
    {
        string path = Path.Combine(Path.GetTempPath(), $"fs-layout-{Guid.NewGuid():N}.bpf.o");
        try
        {
            using (var resource = typeof(TcpCapture).Assembly.GetManifestResourceStream(resourceName))
            {
                resource.Should().NotBeNull($"{resourceName} must be embedded in the sensor");
                using var file = File.Create(path);
                resource!.CopyTo(file);
            }
            return Run("bpftool", $"btf dump file {path}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    internal static string Run(string file, string arguments)
    {
        using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(file, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        process.ExitCode.Should().Be(0, $"{file} {arguments} failed: {stderr.Result}");
        return stdout;
    }

    private static long EnumValue(string header, string name, bool define = false)
    {
        var m = Regex.Match(header, define ? $@"#define\s+{name}\s+(\d+)" : $@"\b{name}\s*=\s*(\d+)");
        m.Success.Should().BeTrue($"{name} must be defined in flowsec.h");
        return long.Parse(m.Groups[1].Value);
    }

    private static string RepoRoot([CallerFilePath] string thisFile = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(thisFile)!, "..", "..", ".."));
}
