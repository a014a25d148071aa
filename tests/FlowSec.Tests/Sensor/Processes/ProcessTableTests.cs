using System.Diagnostics;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Processes;

namespace FlowSec.Tests.Sensor.Processes;

public sealed class ProcessTableTests : IDisposable
{
    private readonly string _fakeProc = Directory.CreateTempSubdirectory("fs-proc-").FullName;

    public void Dispose() => Directory.Delete(_fakeProc, recursive: true);

    [Fact]
    public void Seeding_from_proc_finds_this_process_with_its_name_parent_exe_and_start()
    {
        var table = new ProcessTable();

        int added = table.Seed();

        added.Should().BeGreaterThan(1);
        uint pid = (uint)Environment.ProcessId;
        var self = table.Find(pid);
        self.Should().NotBeNull();
        // ps reads the same kernel state through its own parser: an independent check of ours.
        string[] ps = KernelLayoutTests.Run("ps", $"-o ppid=,comm= -p {pid}").Trim().Split(' ', 2, StringSplitOptions.TrimEntries);
        self!.Ppid.Should().Be(uint.Parse(ps[0]));
        self.Comm.Should().Be(ps[1]);
        self.Exe.Should().Be(KernelLayoutTests.Run("readlink", $"-f /proc/{pid}/exe").Trim());
        self.Uid.Should().Be(0, "the tests run as root");
        self.Args.Should().NotBeEmpty();
        self.ExitedNs.Should().BeNull();
        // Started when .NET says it did (monotonic = now - age), to /proc's 10 ms ticks.
        long ageNs = (long)(DateTime.Now - Process.GetCurrentProcess().StartTime).TotalMilliseconds * 1_000_000;
        ((long)self.StartNs).Should().BeCloseTo(KernelClock.NowNs() - ageNs, 50_000_000);
        table.Find(1).Should().NotBeNull("init is always there");
    }

    [Fact]
    public void Proc_entries_are_parsed_with_awkward_names_and_kernel_threads()
    {
        WriteFakeProcess(100, comm: "we (ird) name", ppid: 7, euid: 1001, cmdline: "a\0b c\0", exe: "/opt/x/bin");
        WriteFakeProcess(2, comm: "kthreadd", ppid: 0, euid: 0, cmdline: "", exe: null);
        var table = new ProcessTable(procRoot: _fakeProc);

        table.Seed().Should().Be(2);

        var p = table.Find(100)!;
        p.Comm.Should().Be("we (ird) name");
        p.Ppid.Should().Be(7);
        p.Uid.Should().Be(1001, "the effective uid, as exec records carry it");
        p.Args.Should().Equal("a", "b c");
        p.Exe.Should().Be("/opt/x/bin");
        var k = table.Find(2)!;
        k.Exe.Should().BeEmpty();
        k.Args.Should().BeEmpty();
    }

    [Fact]
    public void Exec_replaces_what_seeding_read_and_seeding_never_overwrites_an_exec()
    {
        WriteFakeProcess(100, comm: "bash", ppid: 1, euid: 0, cmdline: "bash\0", exe: "/usr/bin/bash");
        var table = new ProcessTable(procRoot: _fakeProc);
        table.Exec(Entry(100, "/usr/bin/id", start: 5));

        table.Seed().Should().Be(0);

        table.Find(100)!.Exe.Should().Be("/usr/bin/id");
    }

    [Fact]
    public void Exited_processes_stay_for_the_retention_then_go()
    {
        var table = new ProcessTable(exitedRetention: TimeSpan.FromSeconds(5), procRoot: _fakeProc);
        table.Exec(Entry(10, "/bin/a", start: 100));

        var exited = table.Exit(10, 100, 1_000_000_000, out bool duplicate);

        duplicate.Should().BeFalse();
        exited!.ExitedNs.Should().Be(1_000_000_000);
        table.Sweep(5_999_999_999).Should().Be(0);
        table.Find(10).Should().NotBeNull("events naming it may still arrive");
        table.Sweep(6_000_000_000).Should().Be(1);
        table.Find(10).Should().BeNull();
        table.Count.Should().Be(0);
    }

    [Fact]
    public void A_second_exit_of_the_same_process_is_a_duplicate()
    {
        var table = new ProcessTable(procRoot: _fakeProc);
        table.Exec(Entry(10, "/bin/a", start: 100));
        table.Exit(10, 100, 1_000, out _);

        table.Exit(10, 100, 1_001, out bool duplicate).Should().NotBeNull();

        duplicate.Should().BeTrue();
    }

    [Fact]
    public void An_entry_with_another_start_time_is_an_earlier_process_and_is_not_attributed()
    {
        var table = new ProcessTable(procRoot: _fakeProc);
        table.Exec(Entry(10, "/bin/old", start: 100));

        // pid 10 reused by a process that forked (start 5 s later) and never exec'd.
        table.Exit(10, 5_000_000_100, 6_000_000_000, out bool duplicate).Should().BeNull();

        duplicate.Should().BeFalse();
        table.Find(10).Should().BeNull("the stale entry is gone");
    }

    [Fact]
    public void A_full_table_drops_the_oldest_exited_first_and_refuses_when_all_run()
    {
        var table = new ProcessTable(capacity: 2, procRoot: _fakeProc);
        table.Exec(Entry(1, "/bin/a", start: 1));
        table.Exec(Entry(2, "/bin/b", start: 2));

        table.Exec(Entry(3, "/bin/c", start: 3));
        table.Find(3).Should().BeNull();
        table.Refused.Should().Be(1);

        table.Exit(1, 1, 10, out _);
        table.Exec(Entry(3, "/bin/c", start: 3));
        table.Find(3)!.Exe.Should().Be("/bin/c");
        table.Find(1).Should().BeNull();
        table.Evicted.Should().Be(1);
        table.Count.Should().Be(2);
    }

    [Fact]
    public void Find_or_load_reads_a_process_the_table_has_not_seen_once()
    {
        var table = new ProcessTable(procRoot: _fakeProc);
        WriteFakeProcess(300, comm: "sh", ppid: 1, euid: 0, cmdline: "sh\0", exe: "/usr/bin/dash");

        table.FindOrLoad(300)!.Exe.Should().Be("/usr/bin/dash");
        Directory.Delete(Path.Combine(_fakeProc, "300"), recursive: true);

        table.FindOrLoad(300).Should().NotBeNull("it is kept once loaded");
        table.FindOrLoad(301).Should().BeNull();
    }

    private static ProcessEntry Entry(uint pid, string exe, ulong start) =>
        new(pid, 1, 0, Path.GetFileName(exe), exe, [exe], start);

    private void WriteFakeProcess(uint pid, string comm, uint ppid, uint euid, string cmdline, string? exe)
    {
        string dir = Directory.CreateDirectory(Path.Combine(_fakeProc, pid.ToString())).FullName;
        // proc_pid_stat(5): pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime ...
        File.WriteAllText(Path.Combine(dir, "stat"),
            $"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 100 18446744073709551615\n");
        File.WriteAllText(Path.Combine(dir, "status"), $"Name:\t{comm}\nUid:\t{euid + 5}\t{euid}\t{euid}\t{euid}\nGid:\t0\t0\t0\t0\n");
        File.WriteAllText(Path.Combine(dir, "cmdline"), cmdline);
        if (exe is not null)
        {
            File.CreateSymbolicLink(Path.Combine(dir, "exe"), exe);
        }
    }
}
