using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using FlowSec.Sensor.Flows;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// TCP connection capture: loads <c>bpf/tcp_lifecycle.bpf.o</c>, drains its ring buffer (one
/// record per socket, at close), turns each record into a flow event and offers it to the
/// <see cref="SensorEventQueue"/>; once per report interval it reads the kernel's socket table and
/// reports connections open for at least that long as "established". When the object cannot load
/// (no BTF, no privileges, verifier rejection) it logs why, reports the path as "unavailable" and
/// leaves the sensor running.
/// </summary>
/// <remarks>
/// Counters (see <see cref="BpfCapture.AddCounters"/>): <c>tcp_records_decoded</c>, <c>tcp_records_malformed</c>,
/// <c>tcp_ringbuf_dropped</c> (kernel reserve failures, all CPUs), <c>tcp_socket_table_full</c>,
/// <c>tcp_flows_emitted</c> (closed and established), <c>tcp_sockets_tracked</c> (entries in the
/// kernel's socket table at the last scan: connections open or connecting), <c>tcp_handler_errors</c>.
/// </remarks>
public sealed class TcpCapture : RingBufferCapture
{
    /// <summary>The embedded object this capture loads.</summary>
    public const string ObjectName = "bpf/tcp_lifecycle.bpf.o";

    private readonly SensorEventQueue _queue;
    private readonly CaptureOptions _options;
    private readonly ILogger<TcpCapture> _logger;
    private readonly string _objectName;
    private volatile FlowAssembler? _assembler;
    private HashMapBatchReader<ulong, FsTcpSocket>? _sockets;
    private long _nextScanNs;
    private long _decoded, _malformed, _emitted, _tracked, _ringbufDropped, _socketTableFull;

    /// <summary>Creates the capture; it starts with the host.</summary>
    public TcpCapture(SensorEventQueue queue, IOptions<CaptureOptions> options, ILogger<TcpCapture> logger)
        : this(queue, options, logger, ObjectName)
    {
    }

    // Another object name lets tests exercise the "cannot load" path.
    internal TcpCapture(SensorEventQueue queue, IOptions<CaptureOptions> options, ILogger<TcpCapture> logger, string objectName)
        : base("tcp", objectName, "TCP capture", options.Value.DrainIntervalMs, logger)
    {
        _queue = queue;
        _options = options.Value;
        _logger = logger;
        _objectName = objectName;
    }

    private protected override void AddCaptureCounters(IDictionary<string, ulong> counters)
    {
        counters["tcp_records_decoded"] = (ulong)Interlocked.Read(ref _decoded);
        counters["tcp_records_malformed"] = (ulong)Interlocked.Read(ref _malformed);
        counters["tcp_ringbuf_dropped"] = (ulong)Interlocked.Read(ref _ringbufDropped);
        counters["tcp_socket_table_full"] = (ulong)Interlocked.Read(ref _socketTableFull);
        counters["tcp_flows_emitted"] = (ulong)Interlocked.Read(ref _emitted);
        counters["tcp_sockets_tracked"] = (ulong)Interlocked.Read(ref _tracked);
        counters["tcp_handler_errors"] = (ulong)HandlerErrors;
    }

    private protected override BpfObject Load()
    {
        _assembler = new FlowAssembler(_options.Node, KernelClock.UnixOffsetNs(), _options.ActiveFlowReportInterval);
        return BpfObject.LoadEmbedded(_objectName, _logger);
    }

    private protected override void StartDraining(BpfObject bpf)
    {
        _sockets = new HashMapBatchReader<ulong, FsTcpSocket>(bpf.MapFd("sockets"));
        _nextScanNs = KernelClock.NowNs() + ReportIntervalNs;
        base.StartDraining(bpf);
    }

    private long ReportIntervalNs => _options.ActiveFlowReportInterval.Ticks * 100;

    private protected override void LogActive() =>
        _logger.LogInformation("TCP capture active (drain every {Interval} ms)", _options.DrainIntervalMs);

    private protected override void OnSample(ReadOnlySpan<byte> sample)
    {
        if (TcpRecordDecoder.TryDecode(sample, out TcpRecord record) != DecodeResult.Ok)
        {
            Interlocked.Increment(ref _malformed);
            return;
        }
        Interlocked.Increment(ref _decoded);
        Emit(_assembler!.Closed(record));
    }

    private protected override void AfterDrain()
    {
        long now = KernelClock.NowNs();
        if (now >= _nextScanNs)
        {
            // Scans at least an interval apart: an entry reported by the previous scan is due again.
            _nextScanNs = now + ReportIntervalNs;
            ReportOpenConnections((ulong)now);
        }
        if (ClockResyncDue(now))
        {
            _assembler!.UnixOffsetNs = KernelClock.UnixOffsetNs();
        }
    }

    // The socket table holds every connection the kernel saw open and not yet closed; a batched
    // read costs one syscall per few thousand entries, once per interval.
    private void ReportOpenConnections(ulong nowNs)
    {
        var assembler = _assembler!;
        int read = _sockets!.ReadAll((in ulong sock, in FsTcpSocket entry) =>
        {
            if (TcpRecordDecoder.TryDecode(sock, entry, nowNs, out TcpRecord open) == DecodeResult.Ok
                && assembler.Established(open, nowNs) is { } report)
            {
                Emit(report);
            }
        }, delete: false);
        Interlocked.Exchange(ref _tracked, read);
    }

    private void Emit(Event flow)
    {
        // The queue counts its own drops; capture never blocks on export.
        _queue.TryEnqueue(flow, netns: 0, out bool kept);
        if (!kept)
        {
            _assembler!.Reuse(flow); // encoded (or dropped): its objects carry the next flow
        }
        Interlocked.Increment(ref _emitted);
    }

    private protected override void CopyKernelCounters(PerCpuCounters kernel)
    {
        Interlocked.Exchange(ref _ringbufDropped, (long)kernel.Sum((uint)KernelCounter.RingBufferReserveFailed));
        Interlocked.Exchange(ref _socketTableFull, (long)kernel.Sum((uint)KernelCounter.SocketTableFull));
    }
}
