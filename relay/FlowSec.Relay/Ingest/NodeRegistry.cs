using System.Collections.Concurrent;
using FlowSec.Api.V1;

namespace FlowSec.Relay.Ingest;

/// <summary>What the relay knows about each sensor node: connection state, last batch, counters.</summary>
public sealed class NodeRegistry
{
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
    public void Received(EventBatch batch)
    {
        var entry = _nodes.GetOrAdd(batch.Node, _ => new NodeEntry());
        entry.Record(batch);
    }

    /// <summary>A snapshot for status.</summary>
    public IEnumerable<NodeStatus> Snapshot() =>
        _nodes.OrderBy(n => n.Key, StringComparer.Ordinal).Select(n => n.Value.ToStatus(n.Key));

    private sealed class NodeEntry
    {
        private readonly Lock _lock = new();
        private int _streams;
        private ulong _lastSeen;
        private ulong _events;
        private SensorStatus? _sensor;

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

        public void Record(EventBatch batch)
        {
            lock (_lock)
            {
                _lastSeen = (ulong)(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000);
                _events += (ulong)batch.Events.Count;
                _sensor = batch.Status ?? _sensor;
            }
        }

        public NodeStatus ToStatus(string node)
        {
            lock (_lock)
            {
                return new NodeStatus
                {
                    Node = node,
                    Connected = _streams > 0,
                    LastSeenUnixNano = _lastSeen,
                    EventsReceived = _events,
                    Sensor = _sensor,
                };
            }
        }
    }
}
