using FlowSec.Api.V1;
using FlowSec.Sensor.Dns;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// DNS capture: loads <c>bpf/dns.bpf.o</c>, attaches its cgroup_skb egress and ingress programs
/// to a cgroup v2 directory (the root by default: the whole node), drains its ring buffer, pairs
/// queries with responses and offers one DNS event per lookup to the <see cref="SensorEventQueue"/>,
/// while teaching the <see cref="DnsNameCache"/> which names each address came from. When the
/// object cannot load or attach it logs why, reports the path as "unavailable" and leaves the
/// sensor running. Stopping destroys the links and unloads everything.
/// </summary>
/// <remarks>
/// Counters (see <see cref="AddCounters"/>): <c>dns_records_decoded</c>, <c>dns_records_malformed</c>
/// (kernel records that did not decode plus messages that are not well-formed DNS),
/// <c>dns_ringbuf_dropped</c>, <c>dns_payload_truncated</c> (messages longer than 512 bytes, parsed
/// as far as captured), <c>dns_payload_load_failed</c>, <c>dns_queries</c>, <c>dns_responses</c>,
/// <c>dns_events_emitted</c>, <c>dns_queries_unanswered</c>, <c>dns_responses_unmatched</c>,
/// <c>dns_queries_evicted</c>, <c>dns_duplicate_sightings</c>, <c>dns_tracked</c>,
/// <c>dns_names_cached</c>, <c>dns_handler_errors</c>.
/// </remarks>
public sealed class DnsCapture : BackgroundService, ICaptureStatus
{
    /// <summary>The embedded object this capture loads.</summary>
    public const string ObjectName = "bpf/dns.bpf.o";

    /// <summary>Used when no cgroup2 mount is found in /proc/self/mounts.</summary>
    public const string DefaultCgroupRoot = "/sys/fs/cgroup/unified";

    private static readonly TimeSpan ClockResyncInterval = TimeSpan.FromMinutes(1);
    private static readonly IReadOnlyDictionary<string, uint> NoMapSizes = new Dictionary<string, uint>();

    private readonly SensorEventQueue _queue;
    private readonly DnsNameCache _names;
    private readonly DnsCaptureOptions _options;
    private readonly ILogger<DnsCapture> _logger;
    private readonly string _objectName;
    private readonly string _cgroupPath;
    private volatile DnsTransactionTracker? _tracker;
    private volatile RingBufferReader? _reader;
    private volatile IReadOnlyList<BpfProgramState>? _programs;
    private volatile string _unavailableReason = "not started";
    // Guards the kernel counter map against being read while the object is closed.
    private readonly Lock _kernelCountersLock = new();
    private PerCpuCounters? _kernelCounters;
    private long _decoded, _undecodable, _ringbufDropped, _payloadTruncated, _loadFailed;
    private long _nextClockSyncNs;

    /// <summary>Creates the capture; it starts with the host.</summary>
    public DnsCapture(SensorEventQueue queue, DnsNameCache names, IOptions<DnsCaptureOptions> options, ILogger<DnsCapture> logger)
        : this(queue, names, options, logger, ObjectName)
    {
    }

    // Another object name lets tests exercise the "cannot load" path.
    internal DnsCapture(SensorEventQueue queue, DnsNameCache names, IOptions<DnsCaptureOptions> options, ILogger<DnsCapture> logger, string objectName)
    {
        _queue = queue;
        _names = names;
        _options = options.Value;
        _logger = logger;
        _objectName = objectName;
        _cgroupPath = string.IsNullOrEmpty(_options.CgroupPath) ? CgroupV2.MountPoint() ?? DefaultCgroupRoot : _options.CgroupPath;
    }

    /// <summary>The cgroup v2 directory the programs attach to.</summary>
    public string CgroupPath => _cgroupPath;

    /// <summary>Kernel ids of the programs while loaded (for tests that check nothing is left behind).</summary>
    internal IReadOnlyList<uint> ProgramIds => _programs?.Select(p => p.KernelId).ToArray() ?? [];

    /// <summary>One <see cref="CapturePath"/> per program, e.g. "cgroup_skb/egress on /sys/fs/cgroup/unified" ("unavailable" with the reason when not loaded).</summary>
    public IEnumerable<CapturePath> CapturePaths()
    {
        var programs = _programs;
        if (programs is null)
        {
            return new[]
            {
                new CapturePath
                {
                    Signal = "dns", Program = _objectName, Path = $"cgroup_skb ingress+egress on {_cgroupPath}",
                    State = "unavailable", Reason = _unavailableReason,
                },
            };
        }
        bool draining = _reader?.IsRunning == true;
        return programs.Select(p => new CapturePath
        {
            Signal = "dns",
            Program = p.Name,
            Path = $"{p.Section} on {_cgroupPath}",
            State = p.Attached && draining ? "active" : "unavailable",
            Reason = p.Error ?? (draining ? "" : "ring buffer drain stopped"),
        }).ToArray();
    }

    /// <summary>Adds this capture's counters (listed in the remarks) to <paramref name="counters"/>.</summary>
    public void AddCounters(IDictionary<string, ulong> counters)
    {
        var tracker = _tracker;
        ReadKernelCounters();
        counters["dns_records_decoded"] = (ulong)Interlocked.Read(ref _decoded);
        counters["dns_records_malformed"] = (ulong)(Interlocked.Read(ref _undecodable) + (tracker?.Malformed ?? 0));
        counters["dns_ringbuf_dropped"] = (ulong)Interlocked.Read(ref _ringbufDropped);
        counters["dns_payload_truncated"] = (ulong)Interlocked.Read(ref _payloadTruncated);
        counters["dns_payload_load_failed"] = (ulong)Interlocked.Read(ref _loadFailed);
        counters["dns_queries"] = (ulong)(tracker?.Queries ?? 0);
        counters["dns_responses"] = (ulong)(tracker?.Responses ?? 0);
        counters["dns_events_emitted"] = (ulong)(tracker?.Emitted ?? 0);
        counters["dns_queries_unanswered"] = (ulong)(tracker?.Unanswered ?? 0);
        counters["dns_responses_unmatched"] = (ulong)(tracker?.Unmatched ?? 0);
        counters["dns_queries_evicted"] = (ulong)(tracker?.Evicted ?? 0);
        counters["dns_duplicate_sightings"] = (ulong)(tracker?.Duplicates ?? 0);
        counters["dns_tracked"] = (ulong)(tracker?.Tracked ?? 0);
        counters["dns_names_cached"] = (ulong)_names.Count;
        counters["dns_handler_errors"] = (ulong)(_reader?.HandlerErrors ?? 0);
    }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Loading runs the verifier: keep it off the host's start path.
        await Task.Yield();
        CgroupSkbObject? bpf = null;
        try
        {
            _tracker = new DnsTransactionTracker(_options.Node, _options.QueryTimeout, _options.MaxTrackedQueries, Emit, _names)
            {
                UnixOffsetNs = KernelClock.UnixOffsetNs(),
            };
            // Attached through BPF links: other programs on the same cgroup are left alone.
            bpf = CgroupSkbObject.LoadEmbedded(_objectName, _cgroupPath, NoMapSizes, _logger);
            _kernelCounters = new PerCpuCounters(bpf.MapFd("counters"));
            _reader = new RingBufferReader(bpf.MapFd("events"), OnSample, _options.DrainIntervalMs, _logger, AfterDrain);
            _reader.Start();
            _programs = bpf.Programs;
            _logger.LogInformation("DNS capture active on {Cgroup} (drain every {Interval} ms)", _cgroupPath, _options.DrainIntervalMs);
            await Task.Delay(Timeout.Infinite, stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            // Never take the sensor down: report the path as unavailable instead.
            _unavailableReason = e.Message;
            _logger.LogError(e, "DNS capture unavailable: {Reason}", e.Message);
        }
        finally
        {
            _reader?.Dispose();
            ReadKernelCounters();
            lock (_kernelCountersLock)
            {
                _kernelCounters = null;
            }
            _programs = null;
            _unavailableReason = stoppingToken.IsCancellationRequested ? "stopped" : _unavailableReason;
            bpf?.Dispose();
        }
    }

    private void OnSample(ReadOnlySpan<byte> sample)
    {
        if (DnsRecordDecoder.TryDecode(sample, out var observation, out var message) != DecodeResult.Ok)
        {
            Interlocked.Increment(ref _undecodable);
            return;
        }
        Interlocked.Increment(ref _decoded);
        _tracker!.Observe(observation, message);
    }

    private void AfterDrain()
    {
        long now = KernelClock.NowNs();
        _tracker!.Tick(now);
        if (now >= _nextClockSyncNs)
        {
            _nextClockSyncNs = now + ClockResyncInterval.Ticks * 100;
            _tracker.UnixOffsetNs = KernelClock.UnixOffsetNs();
        }
    }

    // The queue counts its own drops; capture never blocks on export.
    private void Emit(Event e) => _queue.TryEnqueue(e);

    // Read on demand (a status snapshot every few seconds), the last values kept after stop.
    private void ReadKernelCounters()
    {
        try
        {
            lock (_kernelCountersLock)
            {
                if (_kernelCounters is null)
                {
                    return;
                }
                Interlocked.Exchange(ref _ringbufDropped, (long)_kernelCounters.Sum((uint)DnsKernelCounter.RingBufferReserveFailed));
                Interlocked.Exchange(ref _payloadTruncated, (long)_kernelCounters.Sum((uint)DnsKernelCounter.PayloadTruncated));
                Interlocked.Exchange(ref _loadFailed, (long)_kernelCounters.Sum((uint)DnsKernelCounter.LoadFailed));
            }
        }
        catch (BpfException e)
        {
            _logger.LogWarning("Reading DNS capture kernel counters failed: {Error}", e.Message);
        }
    }
}
