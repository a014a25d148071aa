using System.Collections.Concurrent;
using FlowSec.Api.V1;

namespace FlowSec.Relay.Ingest;

/// <summary>What the relay knows about each sensor node: connection state, last batch, rate, lag, counters.</summary>
public sealed class NodeRegistry
{
    /// <summary>The window over which a node's event rate is averaged.</summary>
    public static readonly TimeSpan RateWindow = TimeSpan.FromSeconds(10);

    private readonly ConcurrentDictionary<string, NodeEntry> _nodes = new(StringComparer.Ordinal);

    /// <summary>Marks a node's stream as open.</summary>
    public void Connected(string node) => _nodes.GetOrAdd(node, _ => new NodeEntry()).AddStream();

    /// <summary>Marks one of a node's streams as closed.</summary>
    public void Disconnected(string node)
    {
        if (_nodes.TryGetValue(node, out var entry))
        {
            entry.RemoveStream();
        }
    }

    /// <summary>Records a batch received from a node.</summary>
    public void Received(EventBatch batch) => Received(batch, DateTimeOffset.UtcNow);

    /// <summary>Records a batch received from a node at <paramref name="now"/>.</summary>
    public void Received(EventBatch batch, DateTimeOffset now) => Received(Pipeline.ReceivedBatch.FromObjects(batch), now);

    /// <summary>Records a batch received from a node (its events as objects or decoded rows) at <paramref name="now"/>.</summary>
    public void Received(Pipeline.ReceivedBatch batch, DateTimeOffset now)
    {
        var entry = _nodes.GetOrAdd(batch.Batch.Node, _ => new NodeEntry());
        entry.Record(batch.Batch.Status, batch.EventCount, batch.OldestTimeUnixNano, now);
    }

    /// <summary>A snapshot for status.</summary>
    public IEnumerable<NodeStatus> Snapshot() => Snapshot(DateTimeOffset.UtcNow);

    /// <summary>A snapshot for status as of <paramref name="now"/>.</summary>
    public IEnumerable<NodeStatus> Snapshot(DateTimeOffset now) =>
        _nodes.OrderBy(n => n.Key, StringComparer.Ordinal).Select(n => n.Value.ToStatus(n.Key, now));

    private sealed class NodeEntry
    {
        private readonly Lock _lock = new();
        private int _streams;
        private ulong _lastSeen;
        private ulong _events;
        private ulong _lagMs;
        private SensorStatus? _sensor;
        // (arrival, events) of the batches inside the rate window, oldest first.
        private readonly Queue<(DateTimeOffset At, int Events)> _recent = new();

        public void AddStream()
        {
            lock (_lock)
            {
                _streams++;
            }
        }

        public void RemoveStream()
        {
            lock (_lock)
            {
                _streams--;
            }
        }

        public void Record(SensorStatus? status, int events, ulong oldest, DateTimeOffset now)
        {
            var nowNs = (ulong)now.ToUnixTimeMilliseconds() * 1_000_000;
            lock (_lock)
            {
                _lastSeen = nowNs;
                _events += (ulong)events;
                _sensor = status ?? _sensor;
                if (events > 0)
                {
                    // Clocks of node and relay may differ slightly: an event "from the future" has no lag.
                    _lagMs = oldest < nowNs ? (nowNs - oldest) / 1_000_000 : 0;
                    _recent.Enqueue((now, events));
                }
                Prune(now);
            }
        }

        private void Prune(DateTimeOffset now)
        {
            while (_recent.Count > 0 && now - _recent.Peek().At > RateWindow)
            {
                _recent.Dequeue();
            }
        }

        public NodeStatus ToStatus(string node, DateTimeOffset now)
        {
            lock (_lock)
            {
                Prune(now);
                return new NodeStatus
                {
                    Node = node,
                    Connected = _streams > 0,
                    LastSeenUnixNano = _lastSeen,
                    EventsReceived = _events,
                    EventsPerSecond = _recent.Sum(r => r.Events) / RateWindow.TotalSeconds,
                    LagMs = _recent.Count > 0 ? _lagMs : 0,
                    Sensor = _sensor,
                };
            }
        }
    }
}
