using Microsoft.Extensions.Logging;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// A <see cref="BpfCapture"/> whose object aggregates in maps that user space reads on a timer:
/// <see cref="Drain"/> runs every drain interval and once more at stop, so traffic up to the
/// stop still counts. A failing drain is counted (the first ten are logged) and the next one
/// tries again.
/// </summary>
public abstract class MapDrainCapture : BpfCapture
{
    private readonly TimeSpan _drainInterval;
    private readonly string _captureName;
    private readonly ILogger _logger;
    private volatile bool _draining;
    private long _drainErrors;

    /// <summary>As <see cref="BpfCapture"/>; the subclass checks that <paramref name="drainInterval"/> is positive before it loads.</summary>
    private protected MapDrainCapture(string signal, string objectName, string captureName, string countersMap,
        TimeSpan drainInterval, ILogger logger)
        : base(signal, objectName, captureName, countersMap, logger)
    {
        _drainInterval = drainInterval;
        _captureName = captureName;
        _logger = logger;
    }

    /// <summary>Raised after every drain, so a test can wait for the kernel's maps to be read without sleeping.</summary>
    internal event Action? Drained;

    /// <summary>Drains that threw.</summary>
    private protected long DrainErrors => Interlocked.Read(ref _drainErrors);

    private protected override bool IsDraining => _draining;

    private protected override string DrainStoppedReason => "drain stopped";

    private protected override void StartDraining(BpfObject bpf)
    {
        // With no program attached nothing would ever be collected: report why instead of draining.
        if (!bpf.Programs.Any(p => p.Attached))
        {
            throw new InvalidOperationException(string.Join("; ", bpf.Programs.Select(p => p.Error)));
        }
        OpenMaps(bpf);
        _draining = true;
    }

    private protected override async Task DrainUntilStoppedAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(_drainInterval);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            Drain();
        }
    }

    private protected override void StopDraining()
    {
        if (MapsOpen)
        {
            // Traffic up to the stop still counts.
            Drain();
        }
        _draining = false;
    }

    /// <summary>Opens the readers of the maps <see cref="DrainMaps"/> reads.</summary>
    private protected abstract void OpenMaps(BpfObject bpf);

    /// <summary>Whether <see cref="OpenMaps"/> has run (a last drain at stop needs the readers).</summary>
    private protected abstract bool MapsOpen { get; }

    /// <summary>Reads the kernel's maps once and emits what they hold.</summary>
    private protected abstract void DrainMaps();

    private void Drain()
    {
        try
        {
            DrainMaps();
        }
        catch (Exception e)
        {
            if (Interlocked.Increment(ref _drainErrors) <= 10)
            {
                _logger.LogError(e, "{Capture} drain failed", _captureName);
            }
        }
        Drained?.Invoke();
    }
}
