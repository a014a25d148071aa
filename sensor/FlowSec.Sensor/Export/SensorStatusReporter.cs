using FlowSec.Api.V1;

namespace FlowSec.Sensor.Export;

/// <summary>A part of the sensor that reports capture paths and loss counters.</summary>
public interface ICaptureStatus
{
    /// <summary>The capture paths this part runs, with their state.</summary>
    IEnumerable<CapturePath> CapturePaths();

    /// <summary>Adds this part's counters (events, drops) to <paramref name="counters"/>.</summary>
    void AddCounters(IDictionary<string, ulong> counters);
}

/// <summary>Builds the <see cref="SensorStatus"/> that rides on batches sent to the relay (at most one a <see cref="SensorOptions.StatusInterval"/>).</summary>
public sealed class SensorStatusReporter(IEnumerable<ICaptureStatus> parts, SensorEventQueue queue)
{
    private readonly ulong _started = (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000;

    /// <summary>Events sent and acked by the relay.</summary>
    public long EventsAcked;

    /// <summary>Takes a snapshot of every part's state and counters.</summary>
    public SensorStatus Snapshot()
    {
        var status = new SensorStatus
        {
            Version = typeof(SensorStatusReporter).Assembly.GetName().Version?.ToString() ?? "",
            StartedUnixNano = _started,
        };
        foreach (var part in parts)
        {
            status.Capture.AddRange(part.CapturePaths());
            part.AddCounters(status.Counters);
        }
        status.Counters["queue_enqueued"] = (ulong)queue.Enqueued;
        status.Counters["queue_dropped"] = (ulong)queue.Dropped;
        status.Counters["queue_depth"] = (ulong)queue.Count;
        status.Counters["scope_events_skipped"] = (ulong)queue.OutOfScope;
        status.Counters["events_acked"] = (ulong)Interlocked.Read(ref EventsAcked);
        return status;
    }
}
