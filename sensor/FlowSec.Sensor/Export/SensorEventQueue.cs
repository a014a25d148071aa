using System.Threading.Channels;
using FlowSec.Api.V1;
using FlowSec.Sensor.Attribution;

namespace FlowSec.Sensor.Export;

/// <summary>
/// The hand-off between capture (which must never block the ring-buffer drain) and export.
/// Bounded: when export falls behind, new events are dropped and counted, never buffered without
/// limit. The disk spool behind the exporter is what absorbs a relay outage.
/// </summary>
/// <remarks>
/// With an <see cref="EndpointEnricher"/> (as the sensor runs), an event is enriched and encoded
/// into its wire bytes by the capture thread that offers it, right after that thread built it,
/// and only the bytes wait for the exporter: the capture then knows at once that nothing refers to
/// the event any more and can build its next one into it (see <see cref="TryEnqueue(Event, uint, out bool)"/>).
/// Moving the work alone saved no CPU (docs/benchmarks.md, issue 3, sixth session); the objects not
/// allocated did. An event whose naming must wait for the rest of its batch
/// (<see cref="EndpointEnricher.TryEnrich"/>) is queued as the event itself, as is every event of a
/// queue without an enricher (tests of one capture read them): the exporter enriches those when it
/// takes them.
/// </remarks>
public sealed class SensorEventQueue
{
    private readonly Channel<QueuedEvent> _channel;
    private readonly CgroupScope _scope;
    private readonly EndpointEnricher? _enricher;
    private long _dropped;
    private long _enqueued;
    // Set while the exporter waits for a batch to fill (see WaitForAsync): one wake-up per batch
    // instead of one per event (a thread-pool hand-off each, about 9 % of the sensor's CPU at
    // 10 k connections/s).
    private TaskCompletionSource? _waiter;
    private int _waitingFor = int.MaxValue;

    /// <summary>
    /// Creates a queue holding at most <paramref name="capacity"/> events that admits only events
    /// of <paramref name="scope"/> (the whole host when null), enriched and encoded as they are
    /// offered when <paramref name="enricher"/> is given (the exporter's own).
    /// </summary>
    public SensorEventQueue(int capacity = 262_144, CgroupScope? scope = null, EndpointEnricher? enricher = null)
    {
        _scope = scope ?? CgroupScope.Host;
        _enricher = enricher;
        _channel = Channel.CreateBounded<QueuedEvent>(new BoundedChannelOptions(capacity)
        {
            // Wait, not DropWrite: with DropWrite TryWrite reports success for the event it drops,
            // so queue_dropped stayed 0. TryWrite never waits; a full queue makes it return false.
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
        });
    }

    /// <summary>Events dropped because the queue was full.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Events accepted into the queue since start.</summary>
    public long Enqueued => Interlocked.Read(ref _enqueued);

    /// <summary>Events left out because they belong to another part of the host (see <see cref="CgroupScope"/>).</summary>
    public long OutOfScope => _scope.Skipped;

    /// <summary>Events waiting for export.</summary>
    public int Count => _channel.Reader.Count;

    /// <summary>The reader side, owned by the exporter.</summary>
    public ChannelReader<QueuedEvent> Reader => _channel.Reader;

    /// <summary>
    /// Offers an event without blocking; returns false (and counts it) when full. An event outside
    /// the sensor's <see cref="CgroupScope"/> is left out (and counted there); <paramref name="netns"/>
    /// is the network namespace it happened in when the capture knows it, for events without a cgroup.
    /// With an enricher the event is enriched here and, when it can be named at once, encoded: the
    /// caller must not change it afterwards.
    /// </summary>
    public bool TryEnqueue(Event e, uint netns = 0) => TryEnqueue(e, netns, out _);

    /// <summary>
    /// As <see cref="TryEnqueue(Event, uint)"/>; <paramref name="keptEvent"/> tells whether the queue
    /// keeps a reference to <paramref name="e"/> (queued as the event itself). When it does not (the
    /// event was encoded, dropped or left out), the caller may build its next event into it.
    /// </summary>
    public bool TryEnqueue(Event e, uint netns, out bool keptEvent)
    {
        keptEvent = false;
        if (!_scope.Admits(e, netns))
        {
            return true;
        }
        var item = _enricher is not null && _enricher.TryEnrich(e) ? new QueuedEvent(EventBatchBytes.Encode(e)) : new QueuedEvent(e);
        if (_channel.Writer.TryWrite(item))
        {
            keptEvent = item.Event is not null;
            Interlocked.Increment(ref _enqueued);
            if (Volatile.Read(ref _waiter) is { } waiter && _channel.Reader.Count >= Volatile.Read(ref _waitingFor))
            {
                waiter.TrySetResult();
            }
            return true;
        }
        Interlocked.Increment(ref _dropped);
        return false;
    }

    /// <summary>
    /// Waits until at least <paramref name="count"/> events are queued, without waking for each
    /// one as <see cref="ChannelReader{T}.WaitToReadAsync"/> does; cancelled through
    /// <paramref name="ct"/> (the batch's deadline). One waiter at a time: the exporter.
    /// </summary>
    public async Task WaitForAsync(int count, CancellationToken ct)
    {
        var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _waitingFor, count);
        Volatile.Write(ref _waiter, waiter);
        try
        {
            // Events queued before the waiter was visible to writers signal nobody: look once more.
            if (_channel.Reader.Count >= count)
            {
                return;
            }
            await waiter.Task.WaitAsync(ct);
        }
        finally
        {
            Volatile.Write(ref _waiter, null);
            Volatile.Write(ref _waitingFor, int.MaxValue);
        }
    }
}
