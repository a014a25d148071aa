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

        BtfLayout.AssertMatches<FsTcpRecord>(btf, "fs_tcp_record", 136);
        TcpRecordDecoder.RecordSize.Should().Be(136);
    }

    [Fact]
    public void Fs_tcp_socket_matches_the_btf_of_the_embedded_object()
    {
        string btf = DumpEmbeddedObjectBtf(TcpCapture.ObjectName);

        BtfLayout.AssertMatches<FsTcpSocket>(btf, "fs_tcp_socket", TcpSocketBytes.Size);
        TcpRecordDecoder.SocketSize.Should().Be(TcpSocketBytes.Size);
        BtfLayout.AssertNoImplicitPadding<FsTcpSocket>("fs_tcp_socket");
    }

    [Fact]
    public void Record_kinds_and_counter_indexes_match_flowsec_h()
    {
        BtfLayout.HeaderValue("FS_RECORD_TCP_CLOSE").Should().Be((long)RecordKind.TcpClose);
        BtfLayout.HeaderValue("FS_COUNTER_RINGBUF_RESERVE_FAILED").Should().Be((long)KernelCounter.RingBufferReserveFailed);
        BtfLayout.HeaderValue("FS_COUNTER_SOCKET_TABLE_FULL").Should().Be((long)KernelCounter.SocketTableFull);
        BtfLayout.HeaderValue("FS_COMM_LEN", define: true).Should().Be(FsTcpRecord.CommLength);
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
}
