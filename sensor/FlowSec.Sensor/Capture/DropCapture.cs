using FlowSec.Sensor.Export;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// Packet drop capture: loads <c>bpf/drops.bpf.o</c> (tracepoint skb/kfree_skb, filtered in the
/// kernel to real drops), and on every drain interval reads and empties its aggregate map: one
/// flow event with verdict DROPPED per 5-tuple, reason and network namespace that lost packets
/// in the interval (see <see cref="DropEvents"/>). Reason codes are named from the running
/// kernel's BTF (<see cref="DropReasons"/>). Covers the whole node: a tracepoint has no cgroup scope.
/// </summary>
/// <remarks>
/// Counters: <c>drops_seen</c> (real drops the kernel saw, any protocol), <c>drops_reported</c>
/// (packets in emitted events), <c>drops_non_ip</c> (counted only), <c>drops_lost</c> (seen − reported
/// − non-IP: aggregates evicted from the LRU, plus drops since the last drain),
/// <c>drop_aggregates_inserted</c>, <c>drop_insert_failed</c>, <c>drop_events</c>, <c>drop_drain_errors</c>.
/// </remarks>
public sealed class DropCapture : MapDrainCapture
{
    /// <summary>The embedded object this capture loads.</summary>
    public const string ObjectName = "bpf/drops.bpf.o";

    private readonly SensorEventQueue _queue;
    private readonly DropCaptureOptions _options;
    private readonly string _node;
    private readonly ILogger<DropCapture> _logger;
    private HashMapBatchReader<FsDropKey, FsDropStats>? _reader;
    private DropReasons? _reasons;
    private long _unixOffsetNs;
    private long _seen, _inserted, _insertFailed, _nonIp, _reported, _events;

    /// <summary>Creates the capture; it starts with the host.</summary>
    public DropCapture(SensorEventQueue queue, IOptions<DropCaptureOptions> options, IOptions<CaptureOptions> capture, ILogger<DropCapture> logger)
        : base("drops", ObjectName, "Drop capture", "drop_counters", options.Value.DrainInterval, logger)
    {
        _queue = queue;
        _options = options.Value;
        _node = capture.Value.Node;
        _logger = logger;
    }

    /// <summary>The reason names in use; null before start.</summary>
    internal DropReasons? Reasons => _reasons;

    private protected override void AddCaptureCounters(IDictionary<string, ulong> counters)
    {
        long seen = Interlocked.Read(ref _seen);
        long nonIp = Interlocked.Read(ref _nonIp);
        long reported = Interlocked.Read(ref _reported);
        counters["drops_seen"] = (ulong)seen;
        counters["drops_reported"] = (ulong)reported;
        counters["drops_non_ip"] = (ulong)nonIp;
        counters["drops_lost"] = (ulong)Math.Max(0, seen - nonIp - reported);
        counters["drop_aggregates_inserted"] = (ulong)Interlocked.Read(ref _inserted);
        counters["drop_insert_failed"] = (ulong)Interlocked.Read(ref _insertFailed);
        counters["drop_events"] = (ulong)Interlocked.Read(ref _events);
        counters["drop_drain_errors"] = (ulong)DrainErrors;
    }

    private protected override BpfObject Load()
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(_options.DrainInterval, TimeSpan.Zero);
        // Names first: without drop reasons in the kernel the program has nothing to report.
        _reasons = DropReasons.FromKernel();
        _unixOffsetNs = KernelClock.UnixOffsetNs();
        return BpfObject.LoadEmbedded(ObjectName, _logger);
    }

    private protected override void OpenMaps(BpfObject bpf) =>
        _reader = new HashMapBatchReader<FsDropKey, FsDropStats>(bpf.MapFd("drops"));

    private protected override bool MapsOpen => _reader is not null;

    private protected override void LogActive() =>
        _logger.LogInformation("Drop capture active ({Reasons} kernel drop reasons, drain every {Interval})",
            _reasons!.Names.Count, _options.DrainInterval);

    private protected override void DrainMaps()
    {
        if (ClockResyncDue(KernelClock.NowNs()))
        {
            _unixOffsetNs = KernelClock.UnixOffsetNs();
        }
        var reasons = _reasons!;
        // Read and delete in one step per hash bucket: each drain reports only what is new.
        _reader!.ReadAll((in FsDropKey key, in FsDropStats stats) =>
        {
            _queue.TryEnqueue(DropEvents.Build(key, stats, reasons, _node, _unixOffsetNs), key.netns);
            Interlocked.Add(ref _reported, (long)stats.packets);
            Interlocked.Increment(ref _events);
        }, delete: true);
    }

    private protected override void CopyKernelCounters(PerCpuCounters kernel)
    {
        Interlocked.Exchange(ref _seen, (long)kernel.Sum((uint)DropCounter.Seen));
        Interlocked.Exchange(ref _inserted, (long)kernel.Sum((uint)DropCounter.Inserts));
        Interlocked.Exchange(ref _insertFailed, (long)kernel.Sum((uint)DropCounter.InsertFailed));
        Interlocked.Exchange(ref _nonIp, (long)kernel.Sum((uint)DropCounter.NonIp));
    }
}
