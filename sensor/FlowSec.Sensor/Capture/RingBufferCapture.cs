using Microsoft.Extensions.Logging;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// A <see cref="BpfCapture"/> whose object sends records through a ring buffer map named
/// <c>events</c>, drained on a thread of its own every <c>drainIntervalMs</c>: each sample goes
/// to <see cref="OnSample"/>, and <see cref="AfterDrain"/> runs after every drain.
/// </summary>
public abstract class RingBufferCapture : BpfCapture
{
    private readonly int _drainIntervalMs;
    private readonly ILogger _logger;
    private volatile RingBufferReader? _reader;

    /// <summary>As <see cref="BpfCapture"/>; the counters map is <c>counters</c>.</summary>
    private protected RingBufferCapture(string signal, string objectName, string captureName, int drainIntervalMs, ILogger logger)
        : base(signal, objectName, captureName, "counters", logger)
    {
        _drainIntervalMs = drainIntervalMs;
        _logger = logger;
    }

    /// <summary>Samples whose handler threw (counted by the reader, which keeps draining).</summary>
    private protected long HandlerErrors => _reader?.HandlerErrors ?? 0;

    private protected override bool IsDraining => _reader?.IsRunning == true;

    private protected override string DrainStoppedReason => "ring buffer drain stopped";

    private protected override void StartDraining(BpfObject bpf)
    {
        _reader = new RingBufferReader(bpf.MapFd("events"), OnSample, _drainIntervalMs, _logger, AfterDrain);
        _reader.Start();
    }

    // The reader's thread does the work; this only holds the service open until the host stops.
    private protected override Task DrainUntilStoppedAsync(CancellationToken stoppingToken) =>
        Task.Delay(Timeout.Infinite, stoppingToken);

    private protected override void StopDraining() => _reader?.Dispose();

    /// <summary>Handles one ring buffer record; runs on the drain thread.</summary>
    private protected abstract void OnSample(ReadOnlySpan<byte> sample);

    /// <summary>Runs on the drain thread after every drain (timeouts, clock resync).</summary>
    private protected abstract void AfterDrain();
}
