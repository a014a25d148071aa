using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using FlowSec.Sensor.Flows;
using Microsoft.Extensions.Hosting;
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
/// Counters (see <see cref="AddCounters"/>): <c>tcp_records_decoded</c>, <c>tcp_records_malformed</c>,
/// <c>tcp_ringbuf_dropped</c> (kernel reserve failures, all CPUs), <c>tcp_socket_table_full</c>,
/// <c>tcp_flows_emitted</c>, <c>tcp_flows_evicted</c>, <c>tcp_flows_superseded</c>,
/// <c>tcp_handler_errors</c>.
/// </remarks>
public sealed class TcpCapture : BackgroundService, ICaptureStatus
{
    /// <summary>The embedded object this capture loads.</summary>
    public const string ObjectName = "bpf/tcp_lifecycle.bpf.o";

    private static readonly TimeSpan ClockResyncInterval = TimeSpan.FromMinutes(1);

    private readonly SensorEventQueue _queue;
    private readonly CaptureOptions _options;
    private readonly ILogger<TcpCapture> _logger;
    private readonly string _objectName;
    private volatile FlowAssembler? _assembler;
    private volatile RingBufferReader? _reader;
    private volatile IReadOnlyList<BpfProgramState>? _programs;
    private volatile string _unavailableReason = "not started";
    // Guards the kernel counter map against being read while the object is closed.
    private readonly Lock _kernelCountersLock = new();
    private PerCpuCounters? _kernelCounters;
    private long _decoded, _malformed, _emitted, _ringbufDropped, _socketTableFull;
    private long _nextClockSyncNs;

    /// <summary>Creates the capture; it starts with the host.</summary>
    public TcpCapture(SensorEventQueue queue, IOptions<CaptureOptions> options, ILogger<TcpCapture> logger)
        : this(queue, options, logger, ObjectName)
    {
    }

    // Another object name lets tests exercise the "cannot load" path.
    internal TcpCapture(SensorEventQueue queue, IOptions<CaptureOptions> options, ILogger<TcpCapture> logger, string objectName)
    {
        _queue = queue;
        _options = options.Value;
        _logger = logger;
        _objectName = objectName;
    }

    /// <summary>Kernel ids of the programs while loaded (for tests that check nothing is left behind).</summary>
    internal IReadOnlyList<uint> ProgramIds => _programs?.Select(p => p.KernelId).ToArray() ?? [];

    /// <summary>One fresh <see cref="CapturePath"/> per program ("unavailable" with the reason when not loaded).</summary>
    public IEnumerable<CapturePath> CapturePaths()
    {
        var programs = _programs;
        if (programs is null)
        {
            return new[] { new CapturePath { Signal = "tcp", Program = _objectName, State = "unavailable", Reason = _unavailableReason } };
        }
        bool draining = _reader?.IsRunning == true;
        return programs.Select(p => new CapturePath
        {
            Signal = "tcp",
            Program = p.Name,
            Path = p.Section,
            State = p.Attached && draining ? "active" : "unavailable",
            Reason = p.Error ?? (draining ? "" : "ring buffer drain stopped"),
        }).ToArray();
    }

    /// <summary>Adds this capture's counters (listed in the remarks) to <paramref name="counters"/>.</summary>
    public void AddCounters(IDictionary<string, ulong> counters)
    {
        var assembler = _assembler;
        ReadKernelCounters();
        counters["tcp_records_decoded"] = (ulong)Interlocked.Read(ref _decoded);
        counters["tcp_records_malformed"] = (ulong)Interlocked.Read(ref _malformed);
        counters["tcp_ringbuf_dropped"] = (ulong)Interlocked.Read(ref _ringbufDropped);
        counters["tcp_socket_table_full"] = (ulong)Interlocked.Read(ref _socketTableFull);
        counters["tcp_flows_emitted"] = (ulong)Interlocked.Read(ref _emitted);
        counters["tcp_flows_evicted"] = (ulong)(assembler?.Evicted ?? 0);
        counters["tcp_flows_superseded"] = (ulong)(assembler?.Superseded ?? 0);
        counters["tcp_handler_errors"] = (ulong)(_reader?.HandlerErrors ?? 0);
    }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Loading runs the verifier (tens to hundreds of ms): keep it off the host's start path.
        await Task.Yield();
        BpfObject? bpf = null;
        try
        {
            _assembler = new FlowAssembler(_options.Node, KernelClock.UnixOffsetNs(),
                _options.ActiveFlowReportInterval, _options.MaxTrackedConnections);
            bpf = BpfObject.LoadEmbedded(_objectName, _logger);
            _kernelCounters = new PerCpuCounters(bpf.MapFd("counters"));
            _reader = new RingBufferReader(bpf.MapFd("events"), OnSample, _options.DrainIntervalMs, _logger, AfterDrain);
            _reader.Start();
            _programs = bpf.Programs;
            _logger.LogInformation("TCP capture active (drain every {Interval} ms)", _options.DrainIntervalMs);
            await Task.Delay(Timeout.Infinite, stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            // Never take the sensor down: report the path as unavailable instead.
            _unavailableReason = e.Message;
            _logger.LogError(e, "TCP capture unavailable: {Reason}", e.Message);
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

    private void AfterDrain()
    {
        long now = KernelClock.NowNs();
        foreach (Event flow in _assembler!.Tick(now))
        {
            Emit(flow);
        }
        if (now >= _nextClockSyncNs)
        {
            _nextClockSyncNs = now + ClockResyncInterval.Ticks * 100;
            _assembler.UnixOffsetNs = KernelClock.UnixOffsetNs();
        }
    }

    private void Emit(Event flow)
    {
        // The queue counts its own drops; capture never blocks on export.
        _queue.TryEnqueue(flow);
        Interlocked.Increment(ref _emitted);
    }

    // Read on demand (a status snapshot every few seconds; two syscalls), the last values kept after stop.
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
                Interlocked.Exchange(ref _ringbufDropped, (long)_kernelCounters.Sum((uint)KernelCounter.RingBufferReserveFailed));
                Interlocked.Exchange(ref _socketTableFull, (long)_kernelCounters.Sum((uint)KernelCounter.SocketTableFull));
            }
        }
        catch (BpfException e)
        {
            _logger.LogWarning("Reading TCP capture kernel counters failed: {Error}", e.Message);
        }
    }
}
