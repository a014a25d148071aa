using System.Text;
using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using FlowSec.Sensor.Processes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// File capture: loads <c>bpf/file.bpf.o</c>, fills its watched-prefix trie from
/// <see cref="FileCaptureOptions"/>, and turns records into FILE events (open, create, write,
/// unlink, rename of watched paths, with the syscall's result) for the
/// <see cref="SensorEventQueue"/>. Unwatched paths are filtered in the kernel and never reach
/// user space. When the object cannot load it logs why, reports "unavailable" and leaves the
/// sensor running.
/// </summary>
/// <remarks>
/// <para>Result: <c>FileActivity.result</c> is the syscall's return value (a file descriptor or
/// 0 on success, <c>-errno</c> on failure); <see cref="ResultUnknown"/> (int.MinValue) in the
/// rare case the kernel could not collect it (counted in <c>file_result_unknown</c>).</para>
/// <para>Events also carry <c>process</c> (pid, effective uid, and exe, ppid, parent exe when a
/// <see cref="ProcessTable"/> knows the process).</para>
/// <para>Counters (see <see cref="BpfCapture.AddCounters"/>): <c>file_records_decoded</c>,
/// <c>file_records_malformed</c>, <c>file_events_emitted</c>, <c>file_unnormalized_unwatched</c>
/// (sent by the kernel for normalization, unwatched after it), <c>file_ringbuf_dropped</c>,
/// <c>file_pending_full</c>, <c>file_pending_replaced</c>, <c>file_result_unknown</c>,
/// <c>file_relative_unresolved</c>, <c>file_path_unreadable</c>, <c>file_handler_errors</c>,
/// <c>file_results_via_task_work</c> (1 when results come from task work, 0 for exit tracepoints).</para>
/// </remarks>
public sealed class FileCapture : RingBufferCapture
{
    /// <summary>The embedded object this capture loads.</summary>
    public const string ObjectName = "bpf/file.bpf.o";

    /// <summary>The result of an event whose syscall result could not be collected.</summary>
    public const int ResultUnknown = int.MinValue;

    private const string TaskWorkPrefix = "tw_";
    internal const string TaskWorkKfunc = "bpf_task_work_schedule_resume_impl";
    private const string KernelBtf = "/sys/kernel/btf/vmlinux";
    private const int MaxTrieEntries = 1024;

    private readonly SensorEventQueue _queue;
    private readonly FileCaptureOptions _options;
    private readonly ILogger<FileCapture> _logger;
    private readonly ProcessTable? _processes;
    private readonly string _objectName;
    private volatile WatchedPaths? _watched;
    private WatchedPaths? _trieEntries;
    private long _decoded, _malformed, _emitted, _unnormalizedUnwatched, _taskWork;
    private readonly long[] _kernel = new long[6];
    private long _unixOffsetNs;

    /// <summary>Creates the capture; it starts with the host. <paramref name="processes"/> names the acting process when given.</summary>
    public FileCapture(SensorEventQueue queue, IOptions<FileCaptureOptions> options, ILogger<FileCapture> logger, ProcessTable? processes = null)
        : this(queue, options, logger, processes, ObjectName)
    {
    }

    // Another object name lets tests exercise the "cannot load" path.
    internal FileCapture(SensorEventQueue queue, IOptions<FileCaptureOptions> options, ILogger<FileCapture> logger,
        ProcessTable? processes, string objectName)
        : base("file", objectName, "File capture", options.Value.DrainIntervalMs, logger)
    {
        _queue = queue;
        _options = options.Value;
        _logger = logger;
        _processes = processes;
        _objectName = objectName;
    }

    /// <summary>
    /// Sees every record that crossed the ring buffer, before the user-space re-check (tests use
    /// it to prove that unwatched paths never leave the kernel). Runs on the drain thread.
    /// </summary>
    internal Action<FileRecord>? RecordObserver { get; set; }

    /// <summary>The result mode in use once loaded; null before.</summary>
    internal FileResultMode? ActiveResultMode { get; private set; }

    // With task work, the entry hook also delivers the result: say so where status shows hooks.
    private protected override string ProgramPath(BpfProgramState program) =>
        ActiveResultMode == FileResultMode.TaskWork ? $"{program.Section} + bpf task work" : program.Section;

    private protected override void AddCaptureCounters(IDictionary<string, ulong> counters)
    {
        counters["file_records_decoded"] = (ulong)Interlocked.Read(ref _decoded);
        counters["file_records_malformed"] = (ulong)Interlocked.Read(ref _malformed);
        counters["file_events_emitted"] = (ulong)Interlocked.Read(ref _emitted);
        counters["file_unnormalized_unwatched"] = (ulong)Interlocked.Read(ref _unnormalizedUnwatched);
        counters["file_ringbuf_dropped"] = (ulong)Interlocked.Read(ref _kernel[(int)FileKernelCounter.RingBufferReserveFailed]);
        counters["file_pending_full"] = (ulong)Interlocked.Read(ref _kernel[(int)FileKernelCounter.PendingFull]);
        counters["file_pending_replaced"] = (ulong)Interlocked.Read(ref _kernel[(int)FileKernelCounter.PendingReplaced]);
        counters["file_result_unknown"] = (ulong)Interlocked.Read(ref _kernel[(int)FileKernelCounter.ResultUnknown]);
        counters["file_relative_unresolved"] = (ulong)Interlocked.Read(ref _kernel[(int)FileKernelCounter.RelativeUnresolved]);
        counters["file_path_unreadable"] = (ulong)Interlocked.Read(ref _kernel[(int)FileKernelCounter.PathUnreadable]);
        counters["file_handler_errors"] = (ulong)HandlerErrors;
        counters["file_results_via_task_work"] = (ulong)Interlocked.Read(ref _taskWork);
    }

    /// <summary>Whether this kernel has the BPF task-work kfunc (6.18+): its name is in the kernel's BTF.</summary>
    internal static bool KernelHasTaskWork()
    {
        try
        {
            byte[] btf = File.ReadAllBytes(KernelBtf);
            return btf.AsSpan().IndexOf(Encoding.ASCII.GetBytes(TaskWorkKfunc + "\0")) >= 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private protected override BpfObject Load()
    {
        if (_options.WatchedPrefixes.Count + _options.ChangesOnlyPrefixes.Count + _options.ExcludedPrefixes.Count > MaxTrieEntries / 2)
        {
            throw new ArgumentException($"at most {MaxTrieEntries / 2} watched, changes-only and excluded prefixes together");
        }
        _trieEntries = WatchedPaths.Create(_options.WatchedPrefixes, _options.ExcludedPrefixes, _options.ChangesOnlyPrefixes);
        _unixOffsetNs = KernelClock.UnixOffsetNs();
        (BpfObject bpf, ActiveResultMode) = LoadForResultMode();
        Interlocked.Exchange(ref _taskWork, ActiveResultMode == FileResultMode.TaskWork ? 1 : 0);
        return bpf;
    }

    private protected override void StartDraining(BpfObject bpf)
    {
        var watched = _trieEntries!;
        FillTrie(bpf.MapFd("watched_prefixes"), watched);
        _watched = watched;
        base.StartDraining(bpf);
    }

    private protected override void LogActive() =>
        _logger.LogInformation("File capture active: {Count} watched prefixes, results via {Mode}, drain every {Interval} ms",
            _options.WatchedPrefixes.Count, ActiveResultMode, _options.DrainIntervalMs);

    // The object holds both program sets; loading both would fail where the kfunc is missing.
    private (BpfObject, FileResultMode) LoadForResultMode()
    {
        FileResultMode mode = _options.ResultMode;
        if (mode == FileResultMode.Auto)
        {
            mode = KernelHasTaskWork() ? FileResultMode.TaskWork : FileResultMode.ExitTracepoints;
        }
        if (mode == FileResultMode.TaskWork)
        {
            try
            {
                return (BpfObject.LoadEmbedded(_objectName, _logger, name => name.StartsWith(TaskWorkPrefix, StringComparison.Ordinal)), mode);
            }
            catch (BpfException e) when (_options.ResultMode == FileResultMode.Auto)
            {
                _logger.LogWarning("File capture: task-work programs did not load ({Error}); using exit tracepoints", e.Message);
            }
        }
        return (BpfObject.LoadEmbedded(_objectName, _logger, name => !name.StartsWith(TaskWorkPrefix, StringComparison.Ordinal)),
            FileResultMode.ExitTracepoints);
    }

    private static unsafe void FillTrie(int mapFd, WatchedPaths watched)
    {
        foreach (var entry in watched.Entries)
        {
            FsPathKey key = WatchedPaths.ToKey(entry);
            uint value = (uint)entry.Watch;
            Libbpf.Check(LibbpfSelection.MapUpdateElem(mapFd, &key, &value, LibbpfSelection.UpdateAny),
                $"adding '{entry.Key}' to watched_prefixes");
        }
    }

    private protected override void OnSample(ReadOnlySpan<byte> sample)
    {
        if (FileRecordDecoder.TryDecode(sample, out FileRecord record) != DecodeResult.Ok)
        {
            Interlocked.Increment(ref _malformed);
            return;
        }
        Interlocked.Increment(ref _decoded);
        RecordObserver?.Invoke(record);
        string path = record.Path, newPath = record.NewPath;
        if ((record.Status & FileStatus.Unnormalized) != 0)
        {
            // The kernel could not tell: decide on the normalized path(s), and report those.
            path = WatchedPaths.Normalize(path);
            newPath = newPath.Length > 0 ? WatchedPaths.Normalize(newPath) : newPath;
            var watched = _watched!;
            if (!watched.IsWatched(path, record.Op) && !(newPath.Length > 0 && watched.IsWatched(newPath, record.Op)))
            {
                Interlocked.Increment(ref _unnormalizedUnwatched);
                return;
            }
        }
        ProcessEntry? actor = _processes?.Find(record.Tgid);
        ProcessEntry? parent = actor is null ? null : _processes!.Find(actor.Ppid);
        _queue.TryEnqueue(FileEvent(record, path, newPath, actor, parent, _options.Node, Interlocked.Read(ref _unixOffsetNs)));
        Interlocked.Increment(ref _emitted);
    }

    /// <summary>The FILE event of <paramref name="r"/>, with its (normalized) paths and what the process table knows of the actor.</summary>
    internal static Event FileEvent(in FileRecord r, string path, string newPath, ProcessEntry? actor, ProcessEntry? parent,
        string node, long unixOffsetNs)
    {
        var process = new ProcessInfo { Pid = r.Tgid, Uid = r.Euid, ParentExe = parent?.Exe ?? "" };
        if (actor is not null)
        {
            process.Ppid = actor.Ppid;
            process.Exe = actor.Exe;
            process.Args.AddRange(actor.Args);
        }
        return new Event
        {
            TimeUnixNano = (ulong)((long)r.TimestampNs + unixOffsetNs),
            Node = node,
            Type = EventType.File,
            Capture = "bpf",
            Source = new Endpoint { Pid = r.Tgid, Process = r.Comm, CgroupId = r.CgroupId },
            Process = process,
            File = new FileActivity
            {
                Path = path,
                Op = FileRecordDecoder.OpName(r.Op),
                Flags = (uint)r.Flags,
                Result = (r.Status & FileStatus.ResultUnknown) != 0 ? ResultUnknown : (int)r.Result,
                NewPath = newPath,
            },
        };
    }

    private protected override void AfterDrain()
    {
        if (ClockResyncDue(KernelClock.NowNs()))
        {
            Interlocked.Exchange(ref _unixOffsetNs, KernelClock.UnixOffsetNs());
        }
    }

    private protected override void CopyKernelCounters(PerCpuCounters kernel)
    {
        for (uint i = 0; i < _kernel.Length; i++)
        {
            Interlocked.Exchange(ref _kernel[i], (long)kernel.Sum(i));
        }
    }
}
