using System.Diagnostics;
using FlowSec.Tests.Sensor;
using Xunit.Abstractions;

namespace FlowSec.Tests.KernelMatrix;

/// <summary>
/// The kernel matrix: every BPF program embedded in the sensor is loaded, attached and fired on
/// the host kernel and on Debian's 6.1 and 6.12 kernels booted under qemu, and the records it
/// emits are decoded with the sensor's own decoders and checked field by field. Writes
/// docs/kernel-matrix.md. Needs root, qemu-system-x86, busybox-static, libbpf-dev, and the kernel
/// packages (apt-get download, cached in .cache/kernels/): without them it fails, it never passes
/// silently. Runs in the libbpf collection so no other kernel test loads programs meanwhile.
/// </summary>
[Collection(LibbpfCollection.Name)]
public sealed class KernelMatrixTests(ITestOutputHelper output)
{
    /// <summary>The whole matrix must stay quick enough for CI on a 2-core machine.</summary>
    private static readonly TimeSpan Budget = TimeSpan.FromMinutes(3);

    /// <summary>Loads, attaches, fires and decodes every program on every kernel; writes the matrix document.</summary>
    [Fact]
    public async Task Every_program_loads_attaches_fires_and_decodes_on_every_kernel()
    {
        Environment.UserName.Should().Be("root", "loading BPF programs needs root");
        var total = Stopwatch.StartNew();
        string work = Path.Combine(Path.GetTempPath(), $"flowsec-kernel-matrix-{Environment.ProcessId}");
        if (Directory.Exists(work))
        {
            Directory.Delete(work, recursive: true);
        }
        Directory.CreateDirectory(work);
        var runner = new MatrixRunner(work);
        output.WriteLine($"work directory: {work}");
        MatrixRunner.RequireTools();

        await runner.BuildToolsAsync();
        var objects = runner.ExtractObjects();
        objects.Should().Contain("tcp_lifecycle.bpf.o", "the sensor assembly embeds its BPF objects as bpf/<name>.bpf.o");
        var units = MatrixRunner.Units(objects);
        output.WriteLine($"objects: {string.Join(", ", objects)}");

        IReadOnlyList<MatrixKernel> kernels;
        try
        {
            kernels = await runner.FetchKernelsAsync();
        }
        catch (InvalidOperationException e)
        {
            Assert.Fail(e.Message);
            return;
        }

        // The host first, alone, so its cost measurements do not compete with two emulators;
        // then the guests side by side, one emulated CPU each.
        var host = await runner.RunHostAsync(units);
        output.WriteLine($"host: {host.Duration.TotalSeconds:0.0} s{(host.Error is null ? "" : " — " + host.Error)}");
        var guests = await Task.WhenAll(kernels.Select(k => runner.RunGuestAsync(k, units)));
        foreach (var g in guests)
        {
            output.WriteLine($"{g.Kernel.Release}: {g.Duration.TotalSeconds:0.0} s{(g.Error is null ? "" : " — " + g.Error)}");
        }
        total.Stop();

        var verdicts = new[] { host }.Concat(guests).Select(r => KernelVerdict.Of(r, units)).ToList();
        string doc = MatrixReport.Render(verdicts, total.Elapsed, DateTimeOffset.UtcNow);
        string docPath = Path.Combine(runner.RepoRoot, "docs", "kernel-matrix.md");
        File.WriteAllText(docPath, doc);
        output.WriteLine($"wrote {docPath}; total {total.Elapsed.TotalSeconds:0.0} s");
        foreach (var v in verdicts)
        {
            output.WriteLine($"{v.Label}: {v.Checks.Count(c => c.Passed)}/{v.Checks.Count} field checks, {v.Failures.Count} failures, {v.Notes.Count} notes");
            foreach (string n in v.Notes)
            {
                output.WriteLine("  note: " + n);
            }
        }

        var failures = verdicts.SelectMany(v => v.Failures).ToList();
        failures.Should().BeEmpty($"every program must load, attach, fire and produce correct records on every kernel (details in {docPath}, raw output in {work})");
        output.WriteLine($"matrix took {total.Elapsed.TotalSeconds:0} s (CI budget {Budget.TotalMinutes:0} min; timing is reported, not asserted)");
        Directory.Delete(work, recursive: true);
    }

    /// <summary>The loader's line format parses back into programs, records and triggers.</summary>
    [Fact]
    public void Loader_output_parses()
    {
        const string text = """
            FACT release 6.1.0-56-cloud-amd64
            FACT pid 92
            FACT comm kmatrix-loader
            ENUM skb_drop_reason SKB_DROP_REASON_NO_SOCKET 3
            UNIT tcp object=tcp_lifecycle.bpf.o mode=all
            FIRE tcp tcp server=127.0.0.1:38945 client=127.0.0.1:55460 client_sent=100 server_sent=200 rc=0
            TIME tcp * load_ms=12
            PROG tcp handle_inet_sock_set_state section=tracepoint/sock/inet_sock_set_state load=ok attach=ok xlated=576 verified=808 jited=2528 run_cnt=14 run_ns=1649898
            RECORD tcp events 0102ff
            ENTRY tcp sockets 0100000000000000 02
            COUNTER tcp counters 0 5
            VLOG tcp handle_inet_sock_set_state R4 invalid zero-sized read
            END tcp ms=40
            DONE
            EXIT 0
            """;
        var o = LoaderOutput.Parse(text);
        o.Done.Should().BeTrue();
        o.ExitCode.Should().Be(0);
        o.Pid.Should().Be(92);
        o.DropReasonEnum.Should().ContainSingle().Which.Value.Should().Be(3);
        var u = o.Units["tcp"];
        u.Programs.Should().ContainSingle().Which.Should().Match<ProgramResult>(p => p.Loaded && p.Attached && p.Fired && p.Verified == 808 && p.Xlated == 576);
        u.Fire("tcp")!.Port("server").Should().Be(38945);
        u.Fire("tcp")!.Address("client").Should().Be("127.0.0.1");
        u.RecordsOf("events").Should().ContainSingle().Which.Should().Equal(1, 2, 255);
        u.EntriesOf("sockets").Should().ContainSingle();
        u.Counters[("counters", 0)].Should().Be(5);
        u.Logs["handle_inet_sock_set_state"].Should().ContainSingle();
        u.LoadMs.Should().Be(12);
        u.Ms.Should().Be(40);
    }

    /// <summary>The file object's program sets and the DNS object's egress programs are alternatives: each gets its own unit.</summary>
    [Fact]
    public void Objects_with_alternative_programs_are_split_into_units()
    {
        var units = MatrixRunner.Units(["dns.bpf.o", "file.bpf.o", "tcp_lifecycle.bpf.o"]);
        units.Should().Equal(
            "dns=dns.bpf.o:choose=dns_egress,dns_egress_task_read,get_current_pid_tgid,get_current_cgroup_id,get_current_task_btf",
            "dns-taskread=dns.bpf.o:!dns_egress",
            $"file-taskwork=file.bpf.o:+tw_:need={MatrixRunner.TaskWorkKfunc}",
            "file-exitpair=file.bpf.o:-tw_",
            "tcp_lifecycle=tcp_lifecycle.bpf.o",
            "probes=probes.bpf.o:each:cost");
    }

    /// <summary>A choose= unit's helper answers and choice parse; a program skipped for a missing helper is a note, not a failure.</summary>
    [Fact]
    public void Helper_gated_choice_parses_and_a_missing_helper_is_not_a_failure()
    {
        const string text = """
            FACT release 6.1.0-57-cloud-amd64
            FACT pid 92
            FACT comm kmatrix-loader
            UNIT dns object=dns.bpf.o mode=all
            HELPER dns cgroup_skb get_current_pid_tgid no
            HELPER dns cgroup_skb get_current_cgroup_id no
            HELPER dns cgroup_skb get_current_task_btf yes
            CHOSE dns dns_egress_task_read missing=get_current_pid_tgid
            PROG dns dns_egress section=cgroup_skb/egress load=skip:no-helper-get_current_pid_tgid attach=skip:not-loaded xlated=0 verified=0 jited=0 run_cnt=0 run_ns=0
            PROG dns dns_egress_task_read section=cgroup_skb/egress load=ok attach=ok xlated=447 verified=5144 jited=2054 run_cnt=16 run_ns=1
            END dns ms=40
            DONE
            EXIT 0
            """;
        var o = LoaderOutput.Parse(text);
        var u = o.Units["dns"];
        u.Helpers.Should().Equal(new Dictionary<string, string> { ["get_current_pid_tgid"] = "no", ["get_current_cgroup_id"] = "no", ["get_current_task_btf"] = "yes" });
        u.Chosen.Should().Be(("dns_egress_task_read", "get_current_pid_tgid"));

        var verdict = KernelVerdict.Of(new KernelRun(new MatrixKernel("6.1", "6.1.0-57-cloud-amd64", "/k"), TimeSpan.Zero, o, null, text, ""), ["dns=dns.bpf.o"]);
        verdict.Failures.Where(f => f.Contains("dns_egress ", StringComparison.Ordinal)).Should().BeEmpty();
        verdict.Notes.Should().ContainSingle(n => n.Contains("kernel lacks helper bpf_get_current_pid_tgid", StringComparison.Ordinal));

        // The same skip where the probe said the helper is there is a failure.
        var lying = LoaderOutput.Parse(text.Replace("get_current_pid_tgid no", "get_current_pid_tgid yes", StringComparison.Ordinal));
        KernelVerdict.Of(new KernelRun(new MatrixKernel("6.1", "6.1.0-57-cloud-amd64", "/k"), TimeSpan.Zero, lying, null, text, ""), ["dns=dns.bpf.o"])
            .Failures.Should().Contain(f => f.Contains("dns_egress", StringComparison.Ordinal) && f.Contains("skipped", StringComparison.Ordinal));
    }
}
