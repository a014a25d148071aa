using System.Threading.Channels;
using FlowSec.Api.V1;

namespace FlowSec.Sensor.Export;

/// <summary>
/// The hand-off between capture (which must never block the ring-buffer drain) and export.
/// Bounded: when export falls behind, new events are dropped and counted, never buffered without
/// limit. The disk spool behind the exporter is what absorbs a relay outage.
/// </summary>
public sealed class SensorEventQueue
{
    private readonly Channel<Event> _channel;
    private long _dropped;
    private long _enqueued;

    /// <summary>Creates a queue holding at most <paramref name="capacity"/> events.</summary>
    public SensorEventQueue(int capacity = 262_144)
    {
        _channel = Channel.CreateBounded<Event>(new BoundedChannelOptions(capacity)
        {
            FullMode = BoundedChannelFullMode.DropWrite,
            SingleReader = true,
        });
    }

    /// <summary>Events dropped because the queue was full.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Events accepted into the queue since start.</summary>
    public long Enqueued => Interlocked.Read(ref _enqueued);

    /// <summary>Events waiting for export.</summary>
    public int Count => _channel.Reader.Count;

    /// <summary>The reader side, owned by the exporter.</summary>
    public ChannelReader<Event> Reader => _channel.Reader;

    /// <summary>Offers an event without blocking; returns false (and counts it) when full.</summary>
    public bool TryEnqueue(Event e)
    {
        if (_channel.Writer.TryWrite(e))
        {
            Interlocked.Increment(ref _enqueued);
            return true;
        }
        Interlocked.Increment(ref _dropped);
        return false;
    }
}
