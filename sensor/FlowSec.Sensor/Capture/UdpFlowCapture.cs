using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.Hosting;
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
public sealed class UdpFlowCapture : BackgroundService, ICaptureStatus
{
    /// <summary>The embedded object this capture loads.</summary>
    public const string ObjectName = "bpf/udp_flows.bpf.o";

    private static readonly TimeSpan ClockResyncInterval = TimeSpan.FromMinutes(1);

    private readonly SensorEventQueue _queue;
    private readonly UdpFlowOptions _options;
    private readonly string _node;
    private readonly ILogger<UdpFlowCapture> _logger;
    private readonly Lock _kernelLock = new();
    private readonly List<FsUdpFlowKey> _idle = new();
    private volatile UdpFlowTable? _table;
    private volatile IReadOnlyList<BpfProgramState>? _programs;
    private volatile bool _draining;
    private volatile string _unavailableReason = "not started";
    private string _cgroupPath = "";
    private PerCpuCounters? _kernelCounters;
    private long _inserted, _insertFailed, _unparsed, _events, _drainErrors;
    private long _nextClockSyncNs;

    /// <summary>Creates the capture; it starts with the host.</summary>
    public UdpFlowCapture(SensorEventQueue queue, IOptions<UdpFlowOptions> options, IOptions<CaptureOptions> capture, ILogger<UdpFlowCapture> logger)
    {
        _queue = queue;
        _options = options.Value;
        _node = capture.Value.Node;
        _logger = logger;
    }

    /// <summary>Kernel ids of the programs while loaded (for tests that check nothing is left behind).</summary>
    internal IReadOnlyList<uint> ProgramIds => _programs?.Select(p => p.KernelId).ToArray() ?? [];

    /// <summary>The cgroup directory the programs are attached to (empty before start).</summary>
    internal string CgroupPath => _cgroupPath;

    /// <summary>Completes one drain after the next, so a test can wait for traffic to be read without sleeping.</summary>
    internal event Action? Drained;

    /// <summary>One <see cref="CapturePath"/> per program ("unavailable" with the reason when not loaded).</summary>
    public IEnumerable<CapturePath> CapturePaths()
    {
        var programs = _programs;
        if (programs is null)
        {
            return [new CapturePath { Signal = "udp", Program = ObjectName, State = "unavailable", Reason = _unavailableReason }];
        }
        bool draining = _draining;
        return programs.Select(p => new CapturePath
        {
            Signal = "udp",
            Program = p.Name,
            Path = $"{p.Section}:{_cgroupPath}",
            State = p.Attached && draining ? "active" : "unavailable",
            Reason = p.Error ?? (draining ? "" : "drain stopped"),
        }).ToArray();
    }

    /// <summary>Adds this capture's counters (listed in the remarks) to <paramref name="counters"/>.</summary>
    public void AddCounters(IDictionary<string, ulong> counters)
    {
        ReadKernelCounters();
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
        counters["udp_drain_errors"] = (ulong)Interlocked.Read(ref _drainErrors);
    }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Loading runs the verifier: keep it off the host's start path.
        await Task.Yield();
        CgroupSkbObject? bpf = null;
        HashMapBatchReader<FsUdpFlowKey, FsUdpFlowStats>? reader = null;
        int flowsFd = -1;
        try
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(_options.DrainInterval, TimeSpan.Zero);
            _cgroupPath = _options.CgroupPath ?? CgroupV2.MountPoint()
                ?? throw new InvalidOperationException("no cgroup v2 hierarchy is mounted (cgroup_skb programs need one)");
            _table = new UdpFlowTable(_node, KernelClock.UnixOffsetNs(), _options.IdleTimeout);
            bpf = CgroupSkbObject.LoadEmbedded(ObjectName, _cgroupPath,
                new Dictionary<string, uint> { ["udp_flows"] = _options.MaxFlows }, _logger);
            if (!bpf.Programs.Any(p => p.Attached))
            {
                throw new InvalidOperationException(string.Join("; ", bpf.Programs.Select(p => p.Error)));
            }
            lock (_kernelLock)
            {
                _kernelCounters = new PerCpuCounters(bpf.MapFd("udp_counters"));
            }
            flowsFd = bpf.MapFd("udp_flows");
            reader = new HashMapBatchReader<FsUdpFlowKey, FsUdpFlowStats>(flowsFd);
            _programs = bpf.Programs;
            _draining = true;
            _logger.LogInformation("UDP flow capture active on {Cgroup} (drain every {Interval})", _cgroupPath, _options.DrainInterval);
            using var timer = new PeriodicTimer(_options.DrainInterval);
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                Drain(reader, flowsFd);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            // Never take the sensor down: report the path as unavailable instead.
            _unavailableReason = e.Message;
            _logger.LogError(e, "UDP flow capture unavailable: {Reason}", e.Message);
        }
        finally
        {
            if (reader is not null)
            {
                // Traffic up to the stop still counts.
                Drain(reader, flowsFd);
            }
            _draining = false;
            ReadKernelCounters();
            lock (_kernelLock)
            {
                _kernelCounters = null;
            }
            _programs = null;
            _unavailableReason = stoppingToken.IsCancellationRequested ? "stopped" : _unavailableReason;
            bpf?.Dispose();
        }
    }

    private unsafe void Drain(HashMapBatchReader<FsUdpFlowKey, FsUdpFlowStats> reader, int flowsFd)
    {
        var table = _table!;
        try
        {
            long now = KernelClock.NowNs();
            if (now >= _nextClockSyncNs)
            {
                _nextClockSyncNs = now + ClockResyncInterval.Ticks * 100;
                table.UnixOffsetNs = KernelClock.UnixOffsetNs();
            }
            table.BeginPass();
            _idle.Clear();
            reader.ReadAll((in FsUdpFlowKey key, in FsUdpFlowStats stats) =>
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
                if (LibbpfMaps.MapLookupAndDeleteElem(flowsFd, &k, &final) == 0)
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
        catch (Exception e)
        {
            if (Interlocked.Increment(ref _drainErrors) <= 10)
            {
                _logger.LogError(e, "UDP flow drain failed");
            }
        }
        Drained?.Invoke();
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

    // Read on demand (a status snapshot every few seconds), the last values kept after stop.
    private void ReadKernelCounters()
    {
        try
        {
            lock (_kernelLock)
            {
                if (_kernelCounters is null)
                {
                    return;
                }
                Interlocked.Exchange(ref _inserted, (long)_kernelCounters.Sum((uint)UdpCounter.Inserts));
                Interlocked.Exchange(ref _insertFailed, (long)_kernelCounters.Sum((uint)UdpCounter.InsertFailed));
                Interlocked.Exchange(ref _unparsed, (long)_kernelCounters.Sum((uint)UdpCounter.Unparsed));
            }
        }
        catch (BpfException e)
        {
            _logger.LogWarning("Reading UDP capture kernel counters failed: {Error}", e.Message);
        }
    }
}
