using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using FlowSec.Sensor.Processes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// Process capture: loads <c>bpf/process.bpf.o</c> (exec and exit), seeds the
/// <see cref="ProcessTable"/> from /proc, and turns records into EXEC and EXIT events for the
/// <see cref="SensorEventQueue"/>. When the object cannot load it logs why, reports the path as
/// "unavailable" and leaves the sensor running.
/// </summary>
/// <remarks>
/// Counters (see <see cref="BpfCapture.AddCounters"/>): <c>process_execs</c>, <c>process_exits</c>,
/// <c>process_records_malformed</c>, <c>process_ringbuf_dropped</c> (kernel reserve failures),
/// <c>process_args_unreadable</c>, <c>process_args_truncated</c>, <c>process_exit_duplicates</c>,
/// <c>process_seeded</c>, <c>process_table_size</c>, <c>process_table_evicted</c>,
/// <c>process_table_refused</c>, <c>process_handler_errors</c>.
/// </remarks>
public sealed class ProcessCapture : RingBufferCapture
{
    /// <summary>The embedded object this capture loads.</summary>
    public const string ObjectName = "bpf/process.bpf.o";

    private static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(1);

    private readonly SensorEventQueue _queue;
    private readonly ProcessTable _table;
    private readonly ProcessCaptureOptions _options;
    private readonly ILogger<ProcessCapture> _logger;
    private readonly string _objectName;
    private long _execs, _exits, _malformed, _ringbufDropped, _argsUnreadable, _argsTruncated, _duplicates, _seeded;
    private long _unixOffsetNs;
    private long _nextSweepNs;

    /// <summary>Creates the capture; it starts with the host.</summary>
    public ProcessCapture(SensorEventQueue queue, ProcessTable table, IOptions<ProcessCaptureOptions> options, ILogger<ProcessCapture> logger)
        : this(queue, table, options, logger, ObjectName)
    {
    }

    // Another object name lets tests exercise the "cannot load" path.
    internal ProcessCapture(SensorEventQueue queue, ProcessTable table, IOptions<ProcessCaptureOptions> options,
        ILogger<ProcessCapture> logger, string objectName)
        : base("process", objectName, "Process capture", options.Value.DrainIntervalMs, logger)
    {
        _queue = queue;
        _table = table;
        _options = options.Value;
        _logger = logger;
        _objectName = objectName;
    }

    private protected override void AddCaptureCounters(IDictionary<string, ulong> counters)
    {
        counters["process_execs"] = (ulong)Interlocked.Read(ref _execs);
        counters["process_exits"] = (ulong)Interlocked.Read(ref _exits);
        counters["process_records_malformed"] = (ulong)Interlocked.Read(ref _malformed);
        counters["process_ringbuf_dropped"] = (ulong)Interlocked.Read(ref _ringbufDropped);
        counters["process_args_unreadable"] = (ulong)Interlocked.Read(ref _argsUnreadable);
        counters["process_args_truncated"] = (ulong)Interlocked.Read(ref _argsTruncated);
        counters["process_exit_duplicates"] = (ulong)Interlocked.Read(ref _duplicates);
        counters["process_seeded"] = (ulong)Interlocked.Read(ref _seeded);
        counters["process_table_size"] = (ulong)_table.Count;
        counters["process_table_evicted"] = (ulong)_table.Evicted;
        counters["process_table_refused"] = (ulong)_table.Refused;
        counters["process_handler_errors"] = (ulong)HandlerErrors;
    }

    private protected override BpfObject Load()
    {
        _unixOffsetNs = KernelClock.UnixOffsetNs();
        return BpfObject.LoadEmbedded(_objectName, _logger);
    }

    private protected override void StartDraining(BpfObject bpf)
    {
        // Seeded after attaching and before draining: a process that starts meanwhile has its
        // exec queued (fresher than /proc, applied after), one that ends has its exit queued.
        // Seeding reads /proc, so it too runs off the host's start path.
        Interlocked.Exchange(ref _seeded, _table.Seed());
        base.StartDraining(bpf);
    }

    private protected override void LogActive() =>
        _logger.LogInformation("Process capture active ({Seeded} processes from /proc, drain every {Interval} ms)",
            Interlocked.Read(ref _seeded), _options.DrainIntervalMs);

    private protected override void OnSample(ReadOnlySpan<byte> sample)
    {
        switch (ProcessRecordDecoder.PeekKind(sample))
        {
            case ProcessRecordKind.Exec when ProcessRecordDecoder.TryDecodeExec(sample, out ExecRecord exec) == DecodeResult.Ok:
                OnExec(exec);
                break;
            case ProcessRecordKind.Exit when ProcessRecordDecoder.TryDecodeExit(sample, out ExitRecord exit) == DecodeResult.Ok:
                OnExit(exit);
                break;
            default:
                Interlocked.Increment(ref _malformed);
                break;
        }
    }

    private void OnExec(in ExecRecord r)
    {
        Interlocked.Increment(ref _execs);
        if (r.ArgsTruncated)
        {
            Interlocked.Increment(ref _argsTruncated);
        }
        // The parent before the child: a parent that forked without exec is read from /proc.
        ProcessEntry? parent = _table.FindOrLoad(r.Ppid);
        string exe = ResolveExe(r.Exe, r.Tgid);
        _table.Exec(new ProcessEntry(r.Tgid, r.Ppid, r.Euid, r.Comm, exe, r.Args, r.StartNs));
        _queue.TryEnqueue(ExecEvent(r, exe, parent, _options.Node, Interlocked.Read(ref _unixOffsetNs)));
    }

    private void OnExit(in ExitRecord r)
    {
        ProcessEntry? entry = _table.Exit(r.Tgid, r.StartNs, r.TimestampNs, out bool duplicate);
        if (duplicate)
        {
            Interlocked.Increment(ref _duplicates);
            return;
        }
        Interlocked.Increment(ref _exits);
        ProcessEntry? parent = _table.Find(r.Ppid);
        _queue.TryEnqueue(ExitEvent(r, entry, parent, _options.Node, Interlocked.Read(ref _unixOffsetNs)));
    }

    /// <summary>The EXEC event of <paramref name="r"/>; <paramref name="exe"/> is its resolved executable path.</summary>
    internal static Event ExecEvent(in ExecRecord r, string exe, ProcessEntry? parent, string node, long unixOffsetNs)
    {
        var process = new ProcessInfo
        {
            Pid = r.Tgid,
            Ppid = r.Ppid,
            Uid = r.Euid,
            Exe = exe,
            ParentExe = parent?.Exe ?? "",
        };
        process.Args.AddRange(r.Args);
        return new Event
        {
            TimeUnixNano = (ulong)((long)r.TimestampNs + unixOffsetNs),
            Node = node,
            Type = EventType.Exec,
            Capture = "bpf",
            Source = new Endpoint { Pid = r.Tgid, Process = r.Comm, CgroupId = r.CgroupId },
            Process = process,
        };
    }

    /// <summary>
    /// The EXIT event of <paramref name="r"/>: exe and arguments from the table's
    /// <paramref name="entry"/> when it knew the process, exit code as
    /// <see cref="ExitRecord.ExitCode"/> (negative: killed by that signal).
    /// </summary>
    internal static Event ExitEvent(in ExitRecord r, ProcessEntry? entry, ProcessEntry? parent, string node, long unixOffsetNs)
    {
        var process = new ProcessInfo
        {
            Pid = r.Tgid,
            Ppid = r.Ppid,
            Uid = r.Euid,
            Exe = entry?.Exe ?? "",
            ExitCode = r.ExitCode,
            ParentExe = parent?.Exe ?? "",
            LifetimeNs = r.LifetimeNs,
        };
        if (entry is not null)
        {
            process.Args.AddRange(entry.Args);
        }
        return new Event
        {
            TimeUnixNano = (ulong)((long)r.TimestampNs + unixOffsetNs),
            Node = node,
            Type = EventType.Exit,
            Capture = "bpf",
            Source = new Endpoint { Pid = r.Tgid, Process = r.Comm, CgroupId = r.CgroupId },
            Process = process,
        };
    }

    // execve's filename may be relative ("./run.sh"); /proc's link is absolute while the process runs.
    private static string ResolveExe(string exe, uint pid)
    {
        if (exe.StartsWith('/'))
        {
            return exe;
        }
        string linked = ProcFs.Exe($"/proc/{pid}");
        return linked.Length > 0 ? linked : exe;
    }

    private protected override void AfterDrain()
    {
        long now = KernelClock.NowNs();
        if (now >= _nextSweepNs)
        {
            _nextSweepNs = now + SweepInterval.Ticks * 100;
            _table.Sweep((ulong)now);
        }
        if (ClockResyncDue(now))
        {
            Interlocked.Exchange(ref _unixOffsetNs, KernelClock.UnixOffsetNs());
        }
    }

    private protected override void CopyKernelCounters(PerCpuCounters kernel)
    {
        Interlocked.Exchange(ref _ringbufDropped, (long)kernel.Sum((uint)ProcessKernelCounter.RingBufferReserveFailed));
        Interlocked.Exchange(ref _argsUnreadable, (long)kernel.Sum((uint)ProcessKernelCounter.ArgsUnreadable));
    }
}
