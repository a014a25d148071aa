using System.Diagnostics;
using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using FlowSec.Sensor.Processes;
using Microsoft.Extensions.Options;
using Xunit.Abstractions;

namespace FlowSec.Tests.Sensor.Processes;

/// <summary>
/// Against the real kernel (the tests run as root): exec and exit of child processes become
/// events with the right pids, exe, arguments and exit codes. One load at a time (libbpf's log
/// hook is process-wide).
/// </summary>
[Collection(LibbpfCollection.Name)]
public sealed class ProcessCaptureKernelTests(ITestOutputHelper output)
{
    private static readonly uint Self = (uint)Environment.ProcessId;

    [Fact]
    public async Task Shell_running_id_yields_exec_events_for_both_then_exit_events_with_code_0()
    {
        string selfExe = ChildProcesses.OwnExe();
        ulong cgroup = ChildProcesses.OwnCgroupId();
        await using var run = await StartAsync();

        var (shPid, code, elapsed) = ChildProcesses.Run("/bin/sh", "-c", "id");
        code.Should().Be(0);
        uint sh = (uint)shPid;

        var shExec = await run.WaitForAsync(e => e.Type == EventType.Exec && e.Process.Pid == sh && e.Source.Process == "sh", "exec of sh");
        var idExec = await run.WaitForAsync(
            e => e.Type == EventType.Exec && e.Source.Process == "id" && (e.Process.Pid == sh || e.Process.Ppid == sh), "exec of id");
        output.WriteLine(shExec.ToString());
        output.WriteLine(idExec.ToString());

        shExec.Process.Ppid.Should().Be(Self);
        shExec.Process.Exe.Should().Be("/bin/sh");
        shExec.Process.Args.Should().Equal("/bin/sh", "-c", "id");
        shExec.Process.ParentExe.Should().Be(selfExe, "the test host was seeded from /proc");
        shExec.Process.Uid.Should().Be(0);
        shExec.Source.Pid.Should().Be(sh);
        shExec.Source.CgroupId.Should().Be(cgroup);
        shExec.Capture.Should().Be("bpf");
        shExec.Node.Should().Be("kernel-test");
        long unixNow = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;
        ((long)shExec.TimeUnixNano).Should().BeCloseTo(unixNow, 10_000_000_000);

        idExec.Process.Exe.Should().StartWith("/").And.EndWith("/id");
        File.Exists(idExec.Process.Exe).Should().BeTrue();
        idExec.Process.Args.Should().Equal("id");
        // dash either execs its last command in place or forks for it; both must be told right.
        if (idExec.Process.Pid == sh)
        {
            idExec.Process.Ppid.Should().Be(Self);
            idExec.Process.ParentExe.Should().Be(selfExe);
        }
        else
        {
            idExec.Process.Ppid.Should().Be(sh);
            idExec.Process.ParentExe.Should().Be("/bin/sh");
        }

        var pids = new[] { sh, idExec.Process.Pid }.Distinct().ToArray();
        var exits = await run.CollectAsync(e => e.Type == EventType.Exit && pids.Contains(e.Process.Pid), pids.Length);
        exits.Should().HaveCount(pids.Length);
        foreach (var exit in exits)
        {
            output.WriteLine(exit.ToString());
            exit.Process.ExitCode.Should().Be(0);
            exit.Process.LifetimeNs.Should().BeGreaterThan(0).And.BeLessThan((ulong)(elapsed + TimeSpan.FromSeconds(1)).Ticks * 100);
            exit.Source.CgroupId.Should().Be(cgroup);
        }
        var shExit = exits.Single(e => e.Process.Pid == sh);
        shExit.Process.Ppid.Should().Be(Self);
        shExit.Process.ParentExe.Should().Be(selfExe);
        shExit.Process.Exe.Should().Be(idExec.Process.Pid == sh ? idExec.Process.Exe : "/bin/sh", "the image the process ended with");
    }

    [Theory]
    [InlineData("exit 3", 3)]
    [InlineData("exit 255", 255)]
    [InlineData("kill -9 $$", -9)]
    [InlineData("kill -TERM $$", -15)]
    public async Task Exit_code_is_the_status_or_minus_the_signal(string script, int expected)
    {
        await using var run = await StartAsync();

        var (pid, code, _) = ChildProcesses.Run("/bin/sh", "-c", script);

        var exit = await run.WaitForAsync(e => e.Type == EventType.Exit && e.Process.Pid == (uint)pid, $"exit of sh -c '{script}'");
        exit.Process.ExitCode.Should().Be(expected);
        code.Should().Be(expected < 0 ? 128 - expected : expected, ".NET reports a signal as 128 + signal");
        exit.Process.Exe.Should().Be("/bin/sh");
        exit.Process.Args.Should().Equal("/bin/sh", "-c", script);
    }

    [Fact]
    public async Task A_process_ended_by_another_thread_than_its_leader_is_reported_once()
    {
        await using var run = await StartAsync();

        // The main thread sleeps; a second thread ends the process with exit_group(7).
        var (pid, code, _) = ChildProcesses.Run("/usr/bin/python3", "-c",
            "import os, threading, time\nthreading.Thread(target=lambda: os._exit(7)).start()\ntime.sleep(30)");
        code.Should().Be(7);
        var exit = await run.WaitForAsync(e => e.Type == EventType.Exit && e.Process.Pid == (uint)pid, "exit of python");
        exit.Process.ExitCode.Should().Be(7);

        // Any second record for it was queued before this later process even started.
        var (marker, _, _) = ChildProcesses.Run("/bin/true");
        await run.WaitForAsync(e => e.Type == EventType.Exit && e.Process.Pid == (uint)marker, "exit of the marker");
        run.Seen(e => e.Type == EventType.Exit && e.Process.Pid == (uint)pid).Should().ContainSingle();
    }

    [Fact]
    public async Task A_process_older_than_the_capture_is_named_by_the_seeded_table()
    {
        using var sleeper = Process.Start(new ProcessStartInfo("/bin/sleep", "30"))!;
        try
        {
            string expectedExe = KernelLayoutTests.Run("realpath", "/bin/sleep").Trim();
            await using var run = await StartAsync();

            sleeper.Kill();
            sleeper.WaitForExit();

            var exit = await run.WaitForAsync(e => e.Type == EventType.Exit && e.Process.Pid == (uint)sleeper.Id, "exit of sleep");
            exit.Process.Exe.Should().Be(expectedExe, "/proc's exe link, read when the table was seeded");
            exit.Process.Args.Should().Equal("/bin/sleep", "30");
            exit.Process.ExitCode.Should().Be(-9);
            exit.Process.Ppid.Should().Be(Self);
            exit.Process.LifetimeNs.Should().BeGreaterThan(0);
        }
        finally
        {
            if (!sleeper.HasExited)
            {
                sleeper.Kill();
            }
        }
    }

    [Fact]
    public async Task Status_lists_both_programs_and_stopping_leaves_none_in_the_kernel()
    {
        IReadOnlyList<uint> ours;
        var status = new List<CapturePath>();
        var counters = new Dictionary<string, ulong>();
        await using (var run = await StartAsync())
        {
            ours = run.Capture.ProgramIds;
            status.AddRange(run.Capture.CapturePaths());
            ours.Should().HaveCount(2).And.NotContain(0u);
            KernelProbe.LoadedProgramIds().Should().Contain(ours);
            KernelProbe.LinkedProgramIds().Should().Contain(ours);
            ChildProcesses.Run("/bin/true");
            await run.WaitForAsync(e => e.Type == EventType.Exit && e.Source.Process == "true", "exit of true");
            run.Capture.AddCounters(counters);
        }

        status.Should().BeEquivalentTo(new[]
        {
            new CapturePath { Signal = "process", Program = "handle_exec", Path = "tp_btf/sched_process_exec", State = "active", Reason = "" },
            new CapturePath { Signal = "process", Program = "handle_exit", Path = "tracepoint/sched/sched_process_exit", State = "active", Reason = "" },
        });
        output.WriteLine(string.Join(", ", counters.Select(c => $"{c.Key}={c.Value}")));
        counters["process_execs"].Should().BeGreaterThan(0);
        counters["process_exits"].Should().BeGreaterThan(0);
        counters["process_seeded"].Should().BeGreaterThan(0);
        counters["process_ringbuf_dropped"].Should().Be(0);
        counters["process_records_malformed"].Should().Be(0);
        counters["process_handler_errors"].Should().Be(0);
        KernelProbe.LoadedProgramIds().Should().NotIntersectWith(ours, "other engineers may load programs meanwhile; ours must be gone");
        KernelProbe.LinkedProgramIds().Should().NotIntersectWith(ours);
    }

    [Fact]
    public async Task Capture_that_cannot_load_reports_unavailable_and_does_not_fault()
    {
        var capture = new ProcessCapture(new SensorEventQueue(), new ProcessTable(), Options.Create(new ProcessCaptureOptions()),
            new TestOutputLogger<ProcessCapture>(output), "bpf/missing.bpf.o");

        await capture.StartAsync(CancellationToken.None);
        await capture.ExecuteTask!.WaitAsync(TimeSpan.FromSeconds(10));

        capture.ExecuteTask.IsFaulted.Should().BeFalse();
        var path = capture.CapturePaths().Should().ContainSingle().Subject;
        path.Signal.Should().Be("process");
        path.State.Should().Be("unavailable");
        path.Reason.Should().Contain("bpf/missing.bpf.o");
        await capture.StopAsync(CancellationToken.None);
        capture.Dispose();
    }

    private Task<CaptureHarness<ProcessCapture>> StartAsync()
    {
        var queue = new SensorEventQueue();
        var capture = new ProcessCapture(queue, new ProcessTable(), Options.Create(new ProcessCaptureOptions { Node = "kernel-test" }),
            new TestOutputLogger<ProcessCapture>(output));
        return CaptureHarness<ProcessCapture>.StartAsync(capture, queue, output);
    }
}
