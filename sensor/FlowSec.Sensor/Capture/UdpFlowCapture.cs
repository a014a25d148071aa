using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// UDP flow capture: loads <c>bpf/udp_flows.bpf.o</c>, attaches its cgroup_skb programs to the
/// configured cgroup v2 directory, and on every drain interval reads the kernel's flow table
/// (batched), emits one "active" UDP flow event per flow with traffic since the last drain (see
/// <see cref="UdpFlowTable"/>) and deletes idle entries. When the object cannot load it logs why,
/// reports the path as "unavailable" and leaves the sensor running.
/// </summary>
/// <remarks>
/// Counters: <c>udp_flow_entries_inserted</c> (by the kernel), <c>udp_flow_entries_drained</c>
/// (seen by a drain), <c>udp_flow_entries_lost</c> (inserted − drained: evicted by the LRU before
/// any drain saw them, plus those created since the last drain), <c>udp_flows_evicted</c> (seen,
/// then evicted: traffic since their last event lost), <c>udp_flows_expired</c> (deleted idle),
/// <c>udp_flow_insert_failed</c>, <c>udp_packets_unparsed</c>, <c>udp_flow_events</c>,
/// <c>udp_flows_tracked</c>, <c>udp_drain_errors</c>.
/// </remarks>
public sealed class UdpFlowCapture : MapDrainCapture
{
    /// <summary>The embedded object this capture loads.</summary>
    public const string ObjectName = "bpf/udp_flows.bpf.o";

    private readonly SensorEventQueue _queue;
    private readonly UdpFlowOptions _options;
    private readonly string _node;
    private readonly ILogger<UdpFlowCapture> _logger;
    private readonly List<FsUdpFlowKey> _idle = new();
    private volatile UdpFlowTable? _table;
    private HashMapBatchReader<FsUdpFlowKey, FsUdpFlowStats>? _reader;
    private int _flowsFd = -1;
    private string _cgroupPath = "";
    private long _inserted, _insertFailed, _unparsed, _events;

    /// <summary>Creates the capture; it starts with the host.</summary>
    public UdpFlowCapture(SensorEventQueue queue, IOptions<UdpFlowOptions> options, IOptions<CaptureOptions> capture, ILogger<UdpFlowCapture> logger)
        : base("udp", ObjectName, "UDP flow capture", "udp_counters", options.Value.DrainInterval, logger)
    {
        _queue = queue;
        _options = options.Value;
        _node = capture.Value.Node;
        _logger = logger;
    }

    /// <summary>The cgroup directory the programs are attached to (empty before start).</summary>
    internal string CgroupPath => _cgroupPath;

    private protected override string ProgramPath(BpfProgramState program) => $"{program.Section}:{_cgroupPath}";

    private protected override void AddCaptureCounters(IDictionary<string, ulong> counters)
    {
        var table = _table;
        long inserted = Interlocked.Read(ref _inserted);
        long drained = table?.EntriesSeen ?? 0;
        counters["udp_flow_entries_inserted"] = (ulong)inserted;
        counters["udp_flow_entries_drained"] = (ulong)drained;
        counters["udp_flow_entries_lost"] = (ulong)Math.Max(0, inserted - drained);
        counters["udp_flows_evicted"] = (ulong)(table?.Evicted ?? 0);
        counters["udp_flows_expired"] = (ulong)(table?.Expired ?? 0);
        counters["udp_flow_insert_failed"] = (ulong)Interlocked.Read(ref _insertFailed);
        counters["udp_packets_unparsed"] = (ulong)Interlocked.Read(ref _unparsed);
        counters["udp_flow_events"] = (ulong)Interlocked.Read(ref _events);
        counters["udp_flows_tracked"] = (ulong)(table?.Count ?? 0);
        counters["udp_drain_errors"] = (ulong)DrainErrors;
    }

    private protected override BpfObject Load()
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(_options.DrainInterval, TimeSpan.Zero);
        _cgroupPath = _options.CgroupPath ?? CgroupV2.MountPoint()
            ?? throw new InvalidOperationException("no cgroup v2 hierarchy is mounted (cgroup_skb programs need one)");
        _table = new UdpFlowTable(_node, KernelClock.UnixOffsetNs(), _options.IdleTimeout);
        return CgroupSkbObject.LoadEmbedded(ObjectName, _cgroupPath,
            new Dictionary<string, uint> { ["udp_flows"] = _options.MaxFlows }, _logger);
    }

    private protected override void OpenMaps(BpfObject bpf)
    {
        _flowsFd = bpf.MapFd("udp_flows");
        _reader = new HashMapBatchReader<FsUdpFlowKey, FsUdpFlowStats>(_flowsFd);
    }

    private protected override bool MapsOpen => _reader is not null;

    private protected override void LogActive() =>
        _logger.LogInformation("UDP flow capture active on {Cgroup} (drain every {Interval})", _cgroupPath, _options.DrainInterval);

    private protected override unsafe void DrainMaps()
    {
        var table = _table!;
        long now = KernelClock.NowNs();
        if (ClockResyncDue(now))
        {
            table.UnixOffsetNs = KernelClock.UnixOffsetNs();
        }
        table.BeginPass();
        _idle.Clear();
        _reader!.ReadAll((in FsUdpFlowKey key, in FsUdpFlowStats stats) =>
        {
            Emit(table.Observe(key, stats, now, out bool idle));
            if (idle)
            {
                _idle.Add(key);
            }
        }, delete: false);
        foreach (FsUdpFlowKey key in _idle)
        {
            FsUdpFlowKey k = key;
            FsUdpFlowStats final;
            // Atomic: a packet that lands between the read above and this delete is not lost.
            if (LibbpfMaps.MapLookupAndDeleteElem(_flowsFd, &k, &final) == 0)
            {
                Emit(table.Remove(k, final));
            }
            else
            {
                table.Forget(k);
            }
        }
        table.EndPass();
    }

    private void Emit(Event? flow)
    {
        if (flow is not null)
        {
            // The queue counts its own drops; capture never blocks on export.
            _queue.TryEnqueue(flow);
            Interlocked.Increment(ref _events);
        }
    }

    private protected override void CopyKernelCounters(PerCpuCounters kernel)
    {
        Interlocked.Exchange(ref _inserted, (long)kernel.Sum((uint)UdpCounter.Inserts));
        Interlocked.Exchange(ref _insertFailed, (long)kernel.Sum((uint)UdpCounter.InsertFailed));
        Interlocked.Exchange(ref _unparsed, (long)kernel.Sum((uint)UdpCounter.Unparsed));
    }
}
