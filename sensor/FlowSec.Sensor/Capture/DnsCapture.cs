using FlowSec.Api.V1;
using FlowSec.Sensor.Dns;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// DNS capture: loads <c>bpf/dns.bpf.o</c>, attaches its cgroup_skb egress program (the one
/// <see cref="DnsEgressPrograms.Choose"/> picks for this kernel) and ingress program to a cgroup v2 directory (the root by default: the whole node), drains its ring buffer, pairs
/// queries with responses and offers one DNS event per lookup to the <see cref="SensorEventQueue"/>,
/// while teaching the <see cref="DnsNameCache"/> which names each address came from. When the
/// object cannot load or attach it logs why, reports the path as "unavailable" and leaves the
/// sensor running. Stopping destroys the links and unloads everything.
/// </summary>
/// <remarks>
/// Counters (see <see cref="BpfCapture.AddCounters"/>): <c>dns_records_decoded</c>, <c>dns_records_malformed</c>
/// (kernel records that did not decode plus messages that are not well-formed DNS),
/// <c>dns_ringbuf_dropped</c>, <c>dns_payload_truncated</c> (UDP messages or TCP segments longer than 512 bytes, parsed
/// as far as captured), <c>dns_payload_load_failed</c>, <c>dns_queries</c>, <c>dns_responses</c>,
/// <c>dns_events_emitted</c>, <c>dns_queries_unanswered</c>, <c>dns_responses_unmatched</c>,
/// <c>dns_queries_evicted</c>, <c>dns_duplicate_sightings</c>, <c>dns_tracked</c>,
/// <c>dns_names_cached</c>, <c>dns_handler_errors</c>; DNS over TCP (<see cref="DnsTcpFraming"/>):
/// <c>dns_tcp_messages</c>, <c>dns_tcp_messages_split</c> (reassembled from several segments),
/// <c>dns_tcp_continuations_skipped</c> (segments whose message boundaries were unknown),
/// <c>dns_tcp_garbage</c>, <c>dns_tcp_truncated</c>, <c>dns_tcp_retransmitted</c>,
/// <c>dns_tcp_streams_evicted</c>.
/// </remarks>
public sealed class DnsCapture : RingBufferCapture
{
    /// <summary>The embedded object this capture loads.</summary>
    public const string ObjectName = "bpf/dns.bpf.o";

    /// <summary>Used when no cgroup2 mount is found in /proc/self/mounts.</summary>
    public const string DefaultCgroupRoot = "/sys/fs/cgroup/unified";

    private static readonly IReadOnlyDictionary<string, uint> NoMapSizes = new Dictionary<string, uint>();

    private readonly SensorEventQueue _queue;
    private readonly DnsNameCache _names;
    private readonly DnsCaptureOptions _options;
    private readonly ILogger<DnsCapture> _logger;
    private readonly string _objectName;
    private readonly string _cgroupPath;
    private volatile DnsTransactionTracker? _tracker;
    private volatile DnsEgressChoice? _egress;
    private volatile DnsTcpFraming? _framing;
    private readonly DnsTcpMessageHandler _onTcpMessage;
    // The segment whose messages _onTcpMessage receives (drain thread only).
    private DnsObservation _segment;
    private long _decoded, _undecodable, _ringbufDropped, _payloadTruncated, _loadFailed;

    /// <summary>Creates the capture; it starts with the host.</summary>
    public DnsCapture(SensorEventQueue queue, DnsNameCache names, IOptions<DnsCaptureOptions> options, ILogger<DnsCapture> logger)
        : this(queue, names, options, logger, ObjectName)
    {
    }

    // Another object name lets tests exercise the "cannot load" path.
    internal DnsCapture(SensorEventQueue queue, DnsNameCache names, IOptions<DnsCaptureOptions> options, ILogger<DnsCapture> logger, string objectName)
        : base("dns", objectName, "DNS capture", options.Value.DrainIntervalMs, logger)
    {
        _queue = queue;
        _names = names;
        _options = options.Value;
        _logger = logger;
        _objectName = objectName;
        _cgroupPath = string.IsNullOrEmpty(_options.CgroupPath) ? CgroupV2.MountPoint() ?? DefaultCgroupRoot : _options.CgroupPath;
        _onTcpMessage = (message, declaredLength) => _tracker!.Observe(_segment with { MessageLength = declaredLength }, message);
    }

    /// <summary>The cgroup v2 directory the programs attach to.</summary>
    public string CgroupPath => _cgroupPath;

    /// <summary>The egress program in use and why, once loaded; null before.</summary>
    public DnsEgressChoice? Egress => _egress;

    // e.g. "cgroup_skb/egress on /sys/fs/cgroup/unified".
    private protected override string ProgramPath(BpfProgramState program) => $"{program.Section} on {_cgroupPath}";

    // Status names the egress program in use; the reason says why that one.
    private protected override string ProgramReason(BpfProgramState program) =>
        _egress is { } egress && program.Name == egress.Program ? egress.Reason : "";

    private protected override string UnavailablePath => $"cgroup_skb ingress+egress on {_cgroupPath}";

    private protected override void AddCaptureCounters(IDictionary<string, ulong> counters)
    {
        var tracker = _tracker;
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
        var framing = _framing;
        counters["dns_tcp_messages"] = (ulong)(framing?.Messages ?? 0);
        counters["dns_tcp_messages_split"] = (ulong)(framing?.MessagesSplit ?? 0);
        counters["dns_tcp_continuations_skipped"] = (ulong)(framing?.ContinuationsSkipped ?? 0);
        counters["dns_tcp_garbage"] = (ulong)(framing?.Garbage ?? 0);
        counters["dns_tcp_truncated"] = (ulong)(framing?.Truncated ?? 0);
        counters["dns_tcp_retransmitted"] = (ulong)(framing?.Retransmitted ?? 0);
        counters["dns_tcp_streams_evicted"] = (ulong)(framing?.Evicted ?? 0);
        counters["dns_handler_errors"] = (ulong)HandlerErrors;
    }

    private protected override BpfObject Load()
    {
        _tracker = new DnsTransactionTracker(_options.Node, _options.QueryTimeout, _options.MaxTrackedQueries, Emit, _names)
        {
            UnixOffsetNs = KernelClock.UnixOffsetNs(),
        };
        _framing = new DnsTcpFraming(_options.MaxTcpStreams, _options.MaxTcpMessageBytes);
        var egress = DnsEgressPrograms.Choose(DnsEgressPrograms.ParseMode(_options.EgressProgram), KernelFeatures.CgroupSkbHasHelper);
        _logger.LogInformation("DNS egress program {Program}: {Reason}", egress.Program, egress.Reason);
        // Attached through BPF links: other programs on the same cgroup are left alone. Only one
        // egress program loads: the other may call helpers this kernel refuses.
        var bpf = CgroupSkbObject.LoadEmbedded(_objectName, _cgroupPath, NoMapSizes, _logger, name => name != egress.NotLoaded);
        _egress = egress;
        return bpf;
    }

    private protected override void LogActive() =>
        _logger.LogInformation("DNS capture active on {Cgroup} (drain every {Interval} ms)", _cgroupPath, _options.DrainIntervalMs);

    private protected override void OnSample(ReadOnlySpan<byte> sample)
    {
        if (DnsRecordDecoder.TryDecode(sample, out var observation, out var message) != DecodeResult.Ok)
        {
            Interlocked.Increment(ref _undecodable);
            return;
        }
        Interlocked.Increment(ref _decoded);
        if (observation.Transport == DnsObservation.Tcp)
        {
            // A TCP segment: its messages come out of the framing, each observed on its own.
            _segment = observation;
            _framing!.OnSegment(observation.SocketCookie, observation.Egress, observation.TcpOffset, observation.MessageLength, message, _onTcpMessage);
            return;
        }
        _tracker!.Observe(observation, message);
    }

    private protected override void AfterDrain()
    {
        long now = KernelClock.NowNs();
        _tracker!.Tick(now);
        if (ClockResyncDue(now))
        {
            _tracker.UnixOffsetNs = KernelClock.UnixOffsetNs();
        }
    }

    // The queue counts its own drops; capture never blocks on export.
    private void Emit(Event e) => _queue.TryEnqueue(e);

    private protected override void CopyKernelCounters(PerCpuCounters kernel)
    {
        Interlocked.Exchange(ref _ringbufDropped, (long)kernel.Sum((uint)DnsKernelCounter.RingBufferReserveFailed));
        Interlocked.Exchange(ref _payloadTruncated, (long)kernel.Sum((uint)DnsKernelCounter.PayloadTruncated));
        Interlocked.Exchange(ref _loadFailed, (long)kernel.Sum((uint)DnsKernelCounter.LoadFailed));
    }
}
