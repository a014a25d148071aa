using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using FlowSec.Sensor.Flows;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// TCP connection capture: loads <c>bpf/tcp_lifecycle.bpf.o</c>, drains its ring buffer,
/// decodes records, assembles one flow event per connection and offers them to the
/// <see cref="SensorEventQueue"/>. When the object cannot load (no BTF, no privileges, verifier
/// rejection) it logs why, reports the path as "unavailable" and leaves the sensor running.
/// </summary>
/// <remarks>
/// Counters (see <see cref="BpfCapture.AddCounters"/>): <c>tcp_records_decoded</c>, <c>tcp_records_malformed</c>,
/// <c>tcp_ringbuf_dropped</c> (kernel reserve failures, all CPUs), <c>tcp_socket_table_full</c>,
/// <c>tcp_flows_emitted</c>, <c>tcp_flows_evicted</c>, <c>tcp_flows_superseded</c>,
/// <c>tcp_handler_errors</c>.
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
    private long _decoded, _malformed, _emitted, _ringbufDropped, _socketTableFull;

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
        var assembler = _assembler;
        counters["tcp_records_decoded"] = (ulong)Interlocked.Read(ref _decoded);
        counters["tcp_records_malformed"] = (ulong)Interlocked.Read(ref _malformed);
        counters["tcp_ringbuf_dropped"] = (ulong)Interlocked.Read(ref _ringbufDropped);
        counters["tcp_socket_table_full"] = (ulong)Interlocked.Read(ref _socketTableFull);
        counters["tcp_flows_emitted"] = (ulong)Interlocked.Read(ref _emitted);
        counters["tcp_flows_evicted"] = (ulong)(assembler?.Evicted ?? 0);
        counters["tcp_flows_superseded"] = (ulong)(assembler?.Superseded ?? 0);
        counters["tcp_handler_errors"] = (ulong)HandlerErrors;
    }

    private protected override BpfObject Load()
    {
        _assembler = new FlowAssembler(_options.Node, KernelClock.UnixOffsetNs(),
            _options.ActiveFlowReportInterval, _options.MaxTrackedConnections);
        return BpfObject.LoadEmbedded(_objectName, _logger);
    }

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
        if (_assembler!.Add(record) is { } flow)
        {
            Emit(flow);
        }
    }

    private protected override void AfterDrain()
    {
        long now = KernelClock.NowNs();
        foreach (Event flow in _assembler!.Tick(now))
        {
            Emit(flow);
        }
        if (ClockResyncDue(now))
        {
            _assembler.UnixOffsetNs = KernelClock.UnixOffsetNs();
        }
    }

    private void Emit(Event flow)
    {
        // The queue counts its own drops; capture never blocks on export.
        _queue.TryEnqueue(flow);
        Interlocked.Increment(ref _emitted);
    }

    private protected override void CopyKernelCounters(PerCpuCounters kernel)
    {
        Interlocked.Exchange(ref _ringbufDropped, (long)kernel.Sum((uint)KernelCounter.RingBufferReserveFailed));
        Interlocked.Exchange(ref _socketTableFull, (long)kernel.Sum((uint)KernelCounter.SocketTableFull));
    }
}
