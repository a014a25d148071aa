using System.Collections.Concurrent;
using System.Text;
using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using FlowSec.Tests.Sensor.Processes;
using Microsoft.Extensions.Options;
using Xunit.Abstractions;

namespace FlowSec.Tests.Sensor.Files;

/// <summary>
/// Against the real kernel (the tests run as root), in both ways of collecting results: syscalls
/// on watched paths become FILE events with their results, and unwatched paths never leave the
/// kernel (the record observer sees everything that crosses the ring buffer). One load at a time.
/// </summary>
[Collection(LibbpfCollection.Name)]
public sealed class FileCaptureKernelTests(ITestOutputHelper output) : IDisposable
{
    private static readonly uint Self = (uint)Environment.ProcessId;
    private static readonly string SelfComm = File.ReadAllText("/proc/self/comm").Trim();

    // <tmp>/fs-files-X/watched is watched; <tmp>/fs-files-X/watched-not shares its name as a string
    // prefix but not as a directory, so it must stay unwatched; watched/excluded is carved out.
    private readonly string _root = Directory.CreateTempSubdirectory("fs-files-").FullName;
    private readonly ConcurrentQueue<FileRecord> _records = new();

    private string Watched => Path.Combine(_root, "watched");

    private string Sibling => Path.Combine(_root, "watched-not");

    private string Excluded => Path.Combine(Watched, "excluded");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Theory]
    [ResultModeData(FileResultMode.TaskWork)]
    [ResultModeData(FileResultMode.ExitTracepoints)]
    public async Task Opens_creates_writes_unlinks_and_renames_under_a_watched_prefix_carry_their_results(FileResultMode mode)
    {
        string existing = Write(Watched, "existing");
        string unwatched = Write(Sibling, "file");
        string excluded = Write(Excluded, "file");
        string mover = Write(Sibling, "mover");
        string forMv = Write(Watched, "for-mv");
        string forRm = Write(Watched, "for-rm");
        string created = Path.Combine(Watched, "created"), renamed = Path.Combine(Watched, "renamed");
        string movedIn = Path.Combine(Watched, "moved-in"), mvTarget = Path.Combine(Watched, "mv-target");
        await using var run = await StartAsync(mode, [Watched], [Excluded]);

        int open = LibC.OpenClose(existing, LibC.O_RDONLY);
        int create = LibC.OpenClose(created, LibC.O_CREAT | LibC.O_WRONLY, 0x180);
        int write = LibC.OpenClose(existing, LibC.O_WRONLY);
        int missing = LibC.OpenClose(Path.Combine(Watched, "missing"), LibC.O_RDONLY);
        int unlink = LibC.Unlink(created);
        int rename = LibC.Rename(existing, renamed);
        int moveIn = LibC.Rename(mover, movedIn);
        LibC.OpenClose(unwatched, LibC.O_RDONLY).Should().BeGreaterThanOrEqualTo(0);
        LibC.OpenClose(excluded, LibC.O_RDONLY).Should().BeGreaterThanOrEqualTo(0);
        var (mvPid, mvCode, _) = ChildProcesses.Run("/bin/mv", forMv, mvTarget);
        var (rmPid, rmCode, _) = ChildProcesses.Run("/bin/rm", forRm);
        new[] { open, create, write, unlink, rename, moveIn, mvCode, rmCode }.Should().OnlyContain(r => r >= 0);
        missing.Should().Be(-2, "ENOENT");
        int sentinel = LibC.OpenClose(Path.Combine(Watched, "sentinel"), LibC.O_RDONLY);

        var eOpen = await Ours(run, existing, "open");
        eOpen.File.Result.Should().Be(open);
        (eOpen.File.Flags & 3).Should().Be((uint)LibC.O_RDONLY);
        var eCreate = await Ours(run, created, "create");
        eCreate.File.Result.Should().Be(create);
        (eCreate.File.Flags & (uint)(LibC.O_CREAT | LibC.O_WRONLY)).Should().Be((uint)(LibC.O_CREAT | LibC.O_WRONLY));
        (await Ours(run, existing, "write")).File.Result.Should().Be(write);
        (await Ours(run, Path.Combine(Watched, "missing"), "open")).File.Result.Should().Be(-2);
        (await Ours(run, created, "unlink")).File.Result.Should().Be(0);
        var eRename = await Ours(run, existing, "rename");
        eRename.File.NewPath.Should().Be(renamed);
        eRename.File.Result.Should().Be(0);
        var eMoveIn = await Ours(run, mover, "rename");
        eMoveIn.File.NewPath.Should().Be(movedIn, "a rename into a watched directory is reported");
        var eMv = await run.WaitForAsync(e => e.Type == EventType.File && e.Source.Pid == (uint)mvPid && e.File.Op == "rename", "mv's rename");
        eMv.File.Path.Should().Be(forMv);
        eMv.File.NewPath.Should().Be(mvTarget);
        eMv.File.Result.Should().Be(0);
        eMv.Source.Process.Should().Be("mv");
        var eRm = await run.WaitForAsync(e => e.Type == EventType.File && e.Source.Pid == (uint)rmPid && e.File.Op == "unlink", "rm's unlink");
        eRm.File.Path.Should().Be(forRm);
        eRm.File.Result.Should().Be(0);
        (await Ours(run, Path.Combine(Watched, "sentinel"), "open")).File.Result.Should().Be(sentinel);

        foreach (var e in new[] { eOpen, eCreate, eRename })
        {
            output.WriteLine(e.ToString());
            e.Capture.Should().Be("bpf");
            e.Node.Should().Be("kernel-test");
            e.Source.Process.Should().Be(SelfComm);
            e.Source.CgroupId.Should().Be(ChildProcesses.OwnCgroupId());
            e.Process.Pid.Should().Be(Self);
            e.Process.Uid.Should().Be(0);
        }
        // Everything before the sentinel has crossed the ring buffer by now: the unwatched and the
        // excluded opens never did.
        _records.Should().NotContain(r => r.Path == unwatched || r.Path == excluded);
        _records.Should().OnlyContain(r => r.Path.StartsWith(Watched + "/", StringComparison.Ordinal) || r.Path == mover);
        var counters = Counters(run.Capture);
        counters["file_ringbuf_dropped"].Should().Be(0);
        counters["file_result_unknown"].Should().Be(0);
        counters["file_results_via_task_work"].Should().Be(mode == FileResultMode.TaskWork ? 1UL : 0UL);
    }

    [Theory]
    [ResultModeData(FileResultMode.TaskWork)]
    [ResultModeData(FileResultMode.ExitTracepoints)]
    public async Task A_changes_only_prefix_reports_writes_but_its_reads_never_leave_the_kernel(FileResultMode mode)
    {
        string config = Path.Combine(Watched, "config");
        string cache = Write(config, "cache");
        string other = Write(Watched, "other");
        await using var run = await StartAsync(mode, [Watched], changesOnly: [config]);

        LibC.OpenClose(cache, LibC.O_RDONLY).Should().BeGreaterThanOrEqualTo(0);
        int write = LibC.OpenClose(cache, LibC.O_WRONLY);
        int read = LibC.OpenClose(other, LibC.O_RDONLY);

        (await Ours(run, cache, "write")).File.Result.Should().Be(write);
        (await Ours(run, other, "open")).File.Result.Should().Be(read, "reads elsewhere under the watched prefix are still reported");
        _records.Where(r => r.Path == cache).Select(r => r.Op).Should().Equal(FileOp.Write);
    }

    [Theory]
    [ResultModeData(FileResultMode.TaskWork)]
    [ResultModeData(FileResultMode.ExitTracepoints)]
    public async Task Cat_of_etc_shadow_is_reported_with_the_default_prefixes(FileResultMode mode)
    {
        await using var run = await StartAsync(mode, FileCaptureOptions.DefaultWatchedPrefixes.ToList(),
            changesOnly: FileCaptureOptions.DefaultChangesOnlyPrefixes.ToList());
        _records.Clear();

        var (pid, code, _) = ChildProcesses.Run("/bin/cat", "/etc/shadow");

        code.Should().Be(0);
        var e = await run.WaitForAsync(e => e.Type == EventType.File && e.Source.Pid == (uint)pid && e.File.Path == "/etc/shadow", "cat's open of /etc/shadow");
        output.WriteLine(e.ToString());
        e.File.Op.Should().Be("open");
        e.File.Result.Should().BeGreaterThanOrEqualTo(0);
        e.Source.Process.Should().Be("cat");
        _records.Should().NotContain(r => r.Tgid == (uint)pid && r.Path == "/etc/ld.so.cache", "its reads are changes-only by default");
    }

    [Theory]
    [ResultModeData(FileResultMode.TaskWork)]
    [ResultModeData(FileResultMode.ExitTracepoints)]
    public async Task Relative_paths_are_joined_to_the_cwd_or_the_dirfd_in_the_kernel(FileResultMode mode)
    {
        string existing = Write(Watched, "existing");
        string deep = Directory.CreateDirectory(Path.Combine(Watched, "a", "b", "c")).FullName;
        Write(Sibling, "file");
        await using var run = await StartAsync(mode, [Watched]);

        // A shell that changed into the directory, then a relative name: "cd /etc && cat shadow".
        var (catPid, _, _) = ChildProcesses.Run("/bin/sh", "-c", $"cd '{Watched}' && exec cat existing");
        var (deepPid, _, _) = ChildProcesses.Run("/bin/sh", "-c", $"cd '{deep}' && exec cat ../../../existing");
        // openat(dirfd, "existing").
        int dirfd = LibC.Open(Watched, LibC.O_RDONLY | LibC.O_DIRECTORY);
        dirfd.Should().BeGreaterThanOrEqualTo(0);
        int atResult = LibC.OpenAt(dirfd, "existing", LibC.O_RDONLY);
        LibC.Close(atResult);
        LibC.Close(dirfd);
        // Relative to an unwatched directory: not reported.
        int siblingFd = LibC.Open(Sibling, LibC.O_RDONLY | LibC.O_DIRECTORY);
        LibC.Close(LibC.OpenAt(siblingFd, "file", LibC.O_RDONLY));
        LibC.Close(siblingFd);
        LibC.OpenClose(Path.Combine(Watched, "sentinel"), LibC.O_RDONLY);

        var cat = await run.WaitForAsync(e => e.Type == EventType.File && e.Source.Pid == (uint)catPid && e.File.Path == existing, "cat existing in the watched cwd");
        cat.File.Result.Should().BeGreaterThanOrEqualTo(0);
        var deepCat = await run.WaitForAsync(e => e.Type == EventType.File && e.Source.Pid == (uint)deepPid && e.File.Path == existing,
            "cat ../../../existing, normalized");
        deepCat.File.Result.Should().BeGreaterThanOrEqualTo(0);
        var at = await Ours(run, existing, "open");
        at.File.Result.Should().Be(atResult);
        await Ours(run, Path.Combine(Watched, "sentinel"), "open");
        _records.Should().Contain(r => r.Tgid == Self && r.Path == existing && r.Status.HasFlag(FileStatus.PathResolved));
        _records.Should().Contain(r => r.Tgid == (uint)deepPid && r.Status.HasFlag(FileStatus.PathResolved | FileStatus.Unnormalized));
        _records.Should().NotContain(r => r.Path.StartsWith(Sibling + "/", StringComparison.Ordinal));
    }

    [Theory]
    [ResultModeData(FileResultMode.TaskWork)]
    [ResultModeData(FileResultMode.ExitTracepoints)]
    public async Task Dot_segments_cannot_hide_a_watched_path_nor_leak_an_unwatched_one(FileResultMode mode)
    {
        string existing = Write(Watched, "existing");
        string unwatched = Write(Sibling, "file");
        await using var run = await StartAsync(mode, [Watched]);

        int viaSibling = LibC.OpenClose(Sibling + "/../watched/existing", LibC.O_RDONLY);
        int doubleSlash = LibC.OpenClose("/" + Watched + "//existing", LibC.O_RDONLY);
        int outAgain = LibC.OpenClose(Watched + "/../watched-not/file", LibC.O_RDONLY);
        new[] { viaSibling, doubleSlash, outAgain }.Should().OnlyContain(r => r >= 0);
        LibC.OpenClose(Path.Combine(Watched, "sentinel"), LibC.O_RDONLY);

        var events = await run.CollectAsync(e => e.Type == EventType.File && e.Source.Pid == Self && e.File.Path == existing, 2);
        events.Select(e => e.File.Result).Should().BeEquivalentTo(new[] { viaSibling, doubleSlash }, "both spellings name the watched file");
        await Ours(run, Path.Combine(Watched, "sentinel"), "open");
        run.Seen(e => e.Type == EventType.File && e.File.Path.Contains("watched-not", StringComparison.Ordinal)).Should().BeEmpty();
        _records.Should().Contain(r => r.Path == Watched + "/../watched-not/file" && r.Status.HasFlag(FileStatus.Unnormalized),
            "the kernel could not tell, so user space decided");
        Counters(run.Capture)["file_unnormalized_unwatched"].Should().BeGreaterThanOrEqualTo(1);
        _records.Should().NotContain(r => r.Path == unwatched);
    }

    [Theory]
    [ResultModeData(FileResultMode.TaskWork)]
    [ResultModeData(FileResultMode.ExitTracepoints)]
    public async Task A_path_in_a_page_not_yet_touched_is_read_after_the_call(FileResultMode mode)
    {
        string existing = Write(Watched, "existing");
        string pathFile = Path.Combine(_root, "path-bytes");
        File.WriteAllBytes(pathFile, Encoding.UTF8.GetBytes(existing + "\0"));
        await using var run = await StartAsync(mode, [Watched]);

        int result;
        unsafe
        {
            byte* untouched = LibC.MapUntouched(pathFile, 4096);
            result = LibC.OpenPointer(untouched, LibC.O_RDONLY);
            LibC.Munmap(untouched, 4096);
            // A pointer to nothing: the kernel fails it, and so does the late read.
            LibC.OpenPointer((byte*)4096, LibC.O_RDONLY).Should().Be(-14, "EFAULT");
        }

        result.Should().BeGreaterThanOrEqualTo(0);
        var e = await Ours(run, existing, "open");
        e.File.Result.Should().Be(result);
        _records.Should().Contain(r => r.Tgid == Self && r.Path == existing && r.Status.HasFlag(FileStatus.ReadLate),
            "the entry hook could not read the path and held the call until the kernel had read it");
        Counters(run.Capture)["file_path_unreadable"].Should().BeGreaterThanOrEqualTo(1);
    }

    [Theory]
    [ResultModeData(FileResultMode.TaskWork, 9)]
    [ResultModeData(FileResultMode.ExitTracepoints, 18)]
    public async Task Status_lists_every_hook_and_stopping_leaves_no_program_in_the_kernel(FileResultMode mode, int programs)
    {
        IReadOnlyList<uint> ours;
        List<CapturePath> status;
        await using (var run = await StartAsync(mode, [Watched]))
        {
            ours = run.Capture.ProgramIds;
            status = run.Capture.CapturePaths().ToList();
            KernelProbe.LoadedProgramIds().Should().Contain(ours);
            KernelProbe.LinkedProgramIds().Should().Contain(ours);
        }

        ours.Should().HaveCount(programs).And.NotContain(0u);
        status.Should().HaveCount(programs).And.OnlyContain(p => p.Signal == "file" && p.State == "active" && p.Reason == "");
        string[] syscalls = ["openat", "openat2", "open", "creat", "unlinkat", "unlink", "renameat2", "renameat", "rename"];
        if (mode == FileResultMode.TaskWork)
        {
            status.Select(p => p.Path).Should().BeEquivalentTo(syscalls.Select(s => $"tracepoint/syscalls/sys_enter_{s} + bpf task work"));
        }
        else
        {
            status.Select(p => p.Path).Should().BeEquivalentTo(
                syscalls.Select(s => $"tracepoint/syscalls/sys_enter_{s}").Concat(syscalls.Select(s => $"tracepoint/syscalls/sys_exit_{s}")));
        }
        // The kernel frees detached programs asynchronously (deferred perf-event release): wait for it, bounded.
        var released = System.Diagnostics.Stopwatch.StartNew();
        while (KernelProbe.LoadedProgramIds().Overlaps(ours) && released.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(50);
        }
        KernelProbe.LoadedProgramIds().Should().NotIntersectWith(ours);
        KernelProbe.LinkedProgramIds().Should().NotIntersectWith(ours);
    }

    [Fact]
    public async Task Auto_mode_uses_task_work_exactly_when_the_kernel_runs_it()
    {
        await using var run = await StartAsync(FileResultMode.Auto, [Watched]);

        // Having the kfunc is not enough: some kernels name it and refuse the call from tracepoints.
        run.Capture.ActiveResultMode.Should().Be(ResultModeDataAttribute.TaskWorkRefusalReason is null ? FileResultMode.TaskWork : FileResultMode.ExitTracepoints);
        output.WriteLine($"this kernel: {run.Capture.ActiveResultMode}");
    }

    [Theory]
    [InlineData("bpf/file.bpf.o", "relative/prefix", "must be an absolute path")]
    [InlineData("bpf/missing.bpf.o", "/etc", "bpf/missing.bpf.o")]
    public async Task Capture_that_cannot_start_reports_unavailable_and_does_not_fault(string objectName, string prefix, string reason)
    {
        var options = new FileCaptureOptions { WatchedPrefixes = [prefix] };
        var capture = new FileCapture(new SensorEventQueue(), Options.Create(options), new TestOutputLogger<FileCapture>(output), null, objectName);

        await capture.StartAsync(CancellationToken.None);
        await capture.ExecuteTask!.WaitAsync(TimeSpan.FromSeconds(10));

        capture.ExecuteTask.IsFaulted.Should().BeFalse();
        var path = capture.CapturePaths().Should().ContainSingle().Subject;
        path.Signal.Should().Be("file");
        path.State.Should().Be("unavailable");
        path.Reason.Should().Contain(reason);
        await capture.StopAsync(CancellationToken.None);
        capture.Dispose();
    }

    private Task<Event> Ours(CaptureHarness<FileCapture> run, string path, string op) =>
        run.WaitForAsync(e => e.Type == EventType.File && e.Source.Pid == Self && e.File.Path == path && e.File.Op == op, $"{op} of {path}");

    private Task<CaptureHarness<FileCapture>> StartAsync(FileResultMode mode, IList<string> watched, IList<string>? excluded = null,
        IList<string>? changesOnly = null)
    {
        var queue = new SensorEventQueue();
        var options = new FileCaptureOptions
        {
            Node = "kernel-test",
            WatchedPrefixes = watched,
            ExcludedPrefixes = excluded ?? [],
            ChangesOnlyPrefixes = changesOnly ?? [],
            ResultMode = mode,
        };
        var capture = new FileCapture(queue, Options.Create(options), new TestOutputLogger<FileCapture>(output))
        {
            RecordObserver = _records.Enqueue,
        };
        return CaptureHarness<FileCapture>.StartAsync(capture, queue, output);
    }

    private static Dictionary<string, ulong> Counters(FileCapture capture)
    {
        var counters = new Dictionary<string, ulong>();
        capture.AddCounters(counters);
        return counters;
    }

    private static string Write(string dir, string name)
    {
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, "x");
        return path;
    }
}
