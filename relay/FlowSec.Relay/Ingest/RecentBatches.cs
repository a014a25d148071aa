using System.Collections.Concurrent;

namespace FlowSec.Relay.Ingest;

/// <summary>
/// Batch ids recently accepted per node, so a batch a sensor sends again (its ack was lost in a
/// reconnect, or it replays its spool) is acked without being stored twice. Bounded per node;
/// in memory, so it covers reconnects and sensor replays, not a restart of this relay.
/// </summary>
public sealed class RecentBatches
{
    private const int PerNode = 65_536;
    private readonly ConcurrentDictionary<string, Window> _nodes = new(StringComparer.Ordinal);
    private long _duplicates;

    /// <summary>Duplicate batches acked without storing.</summary>
    public long Duplicates => Interlocked.Read(ref _duplicates);

    /// <summary>Records the id; false (and counted) when it was seen before.</summary>
    public bool TryAccept(string node, ulong batchId)
    {
        var window = _nodes.GetOrAdd(node, _ => new Window());
        lock (window)
        {
            if (!window.Ids.Add(batchId))
            {
                Interlocked.Increment(ref _duplicates);
                return false;
            }
            window.Order.Enqueue(batchId);
            if (window.Order.Count > PerNode)
            {
                window.Ids.Remove(window.Order.Dequeue());
            }
            return true;
        }
    }

    private sealed class Window
    {
        public HashSet<ulong> Ids { get; } = [];

        public Queue<ulong> Order { get; } = new();
    }
}
