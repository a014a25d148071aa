using System.Text;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Xunit.Abstractions;

namespace FlowSec.Tests.Sensor;

/// <summary>Failure paths of loading: errors carry libbpf's text, and the sensor stays up.</summary>
[Collection(LibbpfCollection.Name)]
public sealed class BpfObjectTests(ITestOutputHelper output)
{
    [Fact]
    public void Garbage_object_fails_with_libbpf_error_text_and_a_formatted_log_line()
    {
        var log = new ListLogger();

        var act = () => BpfObject.Load("bpf/garbage.bpf.o", Encoding.ASCII.GetBytes("this is not an ELF object"), log);

        var error = act.Should().Throw<BpfException>().Which;
        output.WriteLine(error.Message);
        error.Message.Should().StartWith("opening bpf/garbage.bpf.o: ").And.NotContain("Unknown error");
        error.Errno.Should().BeGreaterThan(0);
        // libbpf's printf-style message, formatted with its va_list: the %s became the object name.
        log.Messages.Should().Contain(m => m.Contains("'garbage'"));
    }

    [Fact]
    public void Verifier_rejection_names_the_program_and_logs_the_verifier_output()
    {
        const string source = """
            #define SEC(name) __attribute__((section(name), used))
            SEC("tracepoint/sock/inet_sock_set_state")
            int reads_a_wild_pointer(void *ctx) { return *(volatile int *)(long)0x1234; }
            char LICENSE[] SEC("license") = "GPL";
            """;
        byte[] image = CompileBpf(source);
        var log = new ListLogger();

        var act = () => BpfObject.Load("bpf/wild.bpf.o", image, log);

        var error = act.Should().Throw<BpfException>().Which;
        error.Message.Should().Be(
            "loading bpf/wild.bpf.o: program 'reads_a_wild_pointer' rejected: R1 invalid mem access 'scalar': Permission denied (errno 13)");
        string all = string.Join("\n", log.Messages);
        output.WriteLine(all);
        all.Should().Contain("reads_a_wild_pointer").And.Contain("BEGIN PROG LOAD LOG").And.Contain("invalid mem access");
    }

    /// <summary>
    /// The kernel does not run a tracing program inside itself on the same CPU, and says so only in
    /// the program's info. Here the first program prints, which fires the tracepoint the second one
    /// is on; the second prints too, firing its own tracepoint while it runs: one skipped run each time.
    /// </summary>
    [Fact]
    public void Runs_the_kernel_skipped_are_counted()
    {
        const string source = """
            #define SEC(name) __attribute__((section(name), used))
            static long (*bpf_trace_printk)(const char *fmt, unsigned int fmt_size, ...) = (void *)6;
            SEC("tracepoint/syscalls/sys_enter_getppid")
            int prints(void *ctx) { char fmt[] = "flowsec\n"; bpf_trace_printk(fmt, sizeof(fmt)); return 0; }
            SEC("tp_btf/bpf_trace_printk")
            int nested(void *ctx) { char fmt[] = "nested\n"; bpf_trace_printk(fmt, sizeof(fmt)); return 0; }
            char LICENSE[] SEC("license") = "GPL";
            """;
        using var bpf = BpfObject.Load("bpf/nested.bpf.o", CompileBpf(source), new ListLogger());
        bpf.Programs.Should().OnlyContain(p => p.Attached);
        ulong before = bpf.SkippedRuns();

        for (int i = 0; i < 20; i++)
        {
            GetParentPid();
        }

        (bpf.SkippedRuns() - before).Should().BeGreaterThanOrEqualTo(20, "each getppid() ran the nested program, which the kernel then skipped inside itself");
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "getppid")]
    private static extern int GetParentPid();

    [Fact]
    public void Missing_embedded_object_is_a_clear_error()
    {
        var act = () => BpfObject.LoadEmbedded("bpf/nope.bpf.o", new ListLogger());

        act.Should().Throw<BpfException>().Which.Message.Should().Contain("bpf/nope.bpf.o").And.Contain("No such file");
    }

    [Fact]
    public async Task Capture_that_cannot_load_reports_unavailable_and_does_not_fault()
    {
        var capture = new TcpCapture(new SensorEventQueue(), Options.Create(new CaptureOptions()),
            new TestOutputLogger<TcpCapture>(output), "bpf/missing.bpf.o");

        await capture.StartAsync(CancellationToken.None);
        await capture.ExecuteTask!.WaitAsync(TimeSpan.FromSeconds(10));

        capture.ExecuteTask.IsFaulted.Should().BeFalse("a capture that cannot load must not take the host down");
        var path = capture.CapturePaths().Should().ContainSingle().Subject;
        path.Signal.Should().Be("tcp");
        path.State.Should().Be("unavailable");
        path.Reason.Should().Contain("bpf/missing.bpf.o").And.Contain("No such file");
        var counters = new Dictionary<string, ulong>();
        capture.AddCounters(counters);
        counters.Should().ContainKey("tcp_ringbuf_dropped").WhoseValue.Should().Be(0);
        await capture.StopAsync(CancellationToken.None);
        capture.Dispose();
    }

    private static byte[] CompileBpf(string source)
    {
        string dir = Directory.CreateTempSubdirectory("fs-bpf-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "x.bpf.c"), source);
            KernelLayoutTests.Run("clang-14", $"-O2 -target bpf -c {dir}/x.bpf.c -o {dir}/x.bpf.o");
            return File.ReadAllBytes(Path.Combine(dir, "x.bpf.o"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}

/// <summary>libbpf's log hook is process-wide: tests that load objects share it, so they run one at a time.</summary>
[CollectionDefinition(Name)]
public sealed class LibbpfCollection
{
    /// <summary>The collection name.</summary>
    public const string Name = "libbpf";
}
