using System.Threading.Channels;
using FlowSec.Api.V1;
using FlowSec.Relay.Pipeline;

namespace FlowSec.Relay.Observer;

/// <summary>
/// Live events for <c>GetEvents --follow</c> subscribers. Each subscriber gets its own bounded
/// queue; a subscriber that cannot keep up loses events (counted and reported to it) rather than
/// slowing ingest for everyone.
/// </summary>
public sealed class ObserverFeed : ILiveEventSink
{
    private readonly Lock _lock = new();
    private readonly List<Subscription> _subscribers = [];
    private int _count;

    /// <inheritdoc />
    /// <remarks>True while a follower is subscribed.</remarks>
    public bool HasConsumers => Volatile.Read(ref _count) > 0;

    /// <inheritdoc />
    public void Publish(IReadOnlyList<Event> events)
    {
        Subscription[] current;
        lock (_lock)
        {
            if (_subscribers.Count == 0)
            {
                return;
            }
            current = [.. _subscribers];
        }
        foreach (var subscriber in current)
        {
            foreach (var e in events)
            {
                if (!subscriber.Channel.Writer.TryWrite(e))
                {
                    Interlocked.Increment(ref subscriber.Dropped);
                }
            }
        }
    }

    /// <summary>Starts receiving live events; dispose the subscription to stop.</summary>
    public Subscription Subscribe(int capacity = 65_536)
    {
        var subscription = new Subscription(this, capacity);
        lock (_lock)
        {
            _subscribers.Add(subscription);
            Volatile.Write(ref _count, _subscribers.Count);
        }
        return subscription;
    }

    private void Remove(Subscription subscription)
    {
        lock (_lock)
        {
            _subscribers.Remove(subscription);
            Volatile.Write(ref _count, _subscribers.Count);
        }
    }

    /// <summary>One follower's queue.</summary>
    public sealed class Subscription : IDisposable
    {
        private readonly ObserverFeed _owner;
        internal long Dropped;

        internal Subscription(ObserverFeed owner, int capacity)
        {
            _owner = owner;
            Channel = System.Threading.Channels.Channel.CreateBounded<Event>(new BoundedChannelOptions(capacity)
            {
                FullMode = BoundedChannelFullMode.DropWrite,
                SingleReader = true,
            });
        }

        /// <summary>The live events.</summary>
        public Channel<Event> Channel { get; }

        /// <summary>Events this follower lost because it fell behind.</summary>
        public long DroppedCount => Interlocked.Read(ref Dropped);

        /// <inheritdoc />
        public void Dispose() => _owner.Remove(this);
    }
}
