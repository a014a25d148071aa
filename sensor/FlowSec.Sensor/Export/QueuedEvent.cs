using FlowSec.Api.V1;

namespace FlowSec.Sensor.Export;

/// <summary>
/// An event waiting in the <see cref="SensorEventQueue"/>: either its bytes as they go into a batch
/// (enriched and encoded when it was offered), or the event itself, for the exporter to enrich and
/// encode when it takes it.
/// </summary>
public readonly struct QueuedEvent
{
    internal QueuedEvent(Event e) => Event = e;

    internal QueuedEvent(byte[] encoded) => Encoded = encoded;

    /// <summary>The event, when it was queued as one; null when it was queued as bytes.</summary>
    public Event? Event { get; }

    /// <summary>The event as <see cref="EventBatchBytes"/> holds it (tag, length, event), when it was queued as bytes.</summary>
    internal byte[]? Encoded { get; }
}
