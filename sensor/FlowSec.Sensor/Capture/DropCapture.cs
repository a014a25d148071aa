using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.Hosting;
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
public sealed class DropCapture : BackgroundService, ICaptureStatus
{
    /// <summary>The embedded object this capture loads.</summary>
    public const string ObjectName = "bpf/drops.bpf.o";

    private static readonly TimeSpan ClockResyncInterval = TimeSpan.FromMinutes(1);

    private readonly SensorEventQueue _queue;
    private readonly DropCaptureOptions _options;
    private readonly string _node;
    private readonly ILogger<DropCapture> _logger;
    private readonly Lock _kernelLock = new();
    private volatile IReadOnlyList<BpfProgramState>? _programs;
    private volatile bool _draining;
    private volatile string _unavailableReason = "not started";
    private PerCpuCounters? _kernelCounters;
    private DropReasons? _reasons;
    private long _unixOffsetNs;
    private long _nextClockSyncNs;
    private long _seen, _inserted, _insertFailed, _nonIp, _reported, _events, _drainErrors;

    /// <summary>Creates the capture; it starts with the host.</summary>
    public DropCapture(SensorEventQueue queue, IOptions<DropCaptureOptions> options, IOptions<CaptureOptions> capture, ILogger<DropCapture> logger)
    {
        _queue = queue;
        _options = options.Value;
        _node = capture.Value.Node;
        _logger = logger;
    }

    /// <summary>Kernel ids of the programs while loaded (for tests that check nothing is left behind).</summary>
    internal IReadOnlyList<uint> ProgramIds => _programs?.Select(p => p.KernelId).ToArray() ?? [];

    /// <summary>The reason names in use; null before start.</summary>
    internal DropReasons? Reasons => _reasons;

    /// <summary>Raised after every drain, so a test can wait for drops to be read without sleeping.</summary>
    internal event Action? Drained;

    /// <summary>One <see cref="CapturePath"/> per program ("unavailable" with the reason when not loaded).</summary>
    public IEnumerable<CapturePath> CapturePaths()
    {
        var programs = _programs;
        if (programs is null)
        {
            return [new CapturePath { Signal = "drops", Program = ObjectName, State = "unavailable", Reason = _unavailableReason }];
        }
        bool draining = _draining;
        return programs.Select(p => new CapturePath
        {
            Signal = "drops",
            Program = p.Name,
            Path = p.Section,
            State = p.Attached && draining ? "active" : "unavailable",
            Reason = p.Error ?? (draining ? "" : "drain stopped"),
        }).ToArray();
    }

    /// <summary>Adds this capture's counters (listed in the remarks) to <paramref name="counters"/>.</summary>
    public void AddCounters(IDictionary<string, ulong> counters)
    {
        ReadKernelCounters();
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
        counters["drop_drain_errors"] = (ulong)Interlocked.Read(ref _drainErrors);
    }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await Task.Yield();
        BpfObject? bpf = null;
        HashMapBatchReader<FsDropKey, FsDropStats>? reader = null;
        try
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(_options.DrainInterval, TimeSpan.Zero);
            // Names first: without drop reasons in the kernel the program has nothing to report.
            _reasons = DropReasons.FromKernel();
            _unixOffsetNs = KernelClock.UnixOffsetNs();
            bpf = BpfObject.LoadEmbedded(ObjectName, _logger);
            if (!bpf.Programs.Any(p => p.Attached))
            {
                throw new InvalidOperationException(string.Join("; ", bpf.Programs.Select(p => p.Error)));
            }
            lock (_kernelLock)
            {
                _kernelCounters = new PerCpuCounters(bpf.MapFd("drop_counters"));
            }
            reader = new HashMapBatchReader<FsDropKey, FsDropStats>(bpf.MapFd("drops"));
            _programs = bpf.Programs;
            _draining = true;
            _logger.LogInformation("Drop capture active ({Reasons} kernel drop reasons, drain every {Interval})",
                _reasons.Names.Count, _options.DrainInterval);
            using var timer = new PeriodicTimer(_options.DrainInterval);
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                Drain(reader);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            _unavailableReason = e.Message;
            _logger.LogError(e, "Drop capture unavailable: {Reason}", e.Message);
        }
        finally
        {
            if (reader is not null)
            {
                Drain(reader);
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

    private void Drain(HashMapBatchReader<FsDropKey, FsDropStats> reader)
    {
        try
        {
            long now = KernelClock.NowNs();
            if (now >= _nextClockSyncNs)
            {
                _nextClockSyncNs = now + ClockResyncInterval.Ticks * 100;
                _unixOffsetNs = KernelClock.UnixOffsetNs();
            }
            var reasons = _reasons!;
            // Read and delete in one step per hash bucket: each drain reports only what is new.
            reader.ReadAll((in FsDropKey key, in FsDropStats stats) =>
            {
                _queue.TryEnqueue(DropEvents.Build(key, stats, reasons, _node, _unixOffsetNs));
                Interlocked.Add(ref _reported, (long)stats.packets);
                Interlocked.Increment(ref _events);
            }, delete: true);
        }
        catch (Exception e)
        {
            if (Interlocked.Increment(ref _drainErrors) <= 10)
            {
                _logger.LogError(e, "Drop drain failed");
            }
        }
        Drained?.Invoke();
    }

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
                Interlocked.Exchange(ref _seen, (long)_kernelCounters.Sum((uint)DropCounter.Seen));
                Interlocked.Exchange(ref _inserted, (long)_kernelCounters.Sum((uint)DropCounter.Inserts));
                Interlocked.Exchange(ref _insertFailed, (long)_kernelCounters.Sum((uint)DropCounter.InsertFailed));
                Interlocked.Exchange(ref _nonIp, (long)_kernelCounters.Sum((uint)DropCounter.NonIp));
            }
        }
        catch (BpfException e)
        {
            _logger.LogWarning("Reading drop capture kernel counters failed: {Error}", e.Message);
        }
    }
}
