using System.Collections.Concurrent;

namespace FlowSec.Relay.Ingest;

/// <summary>
/// Batch ids recently accepted per node, with the task that completes when each is stored, so a
/// batch a sensor sends again (its ack was lost in a reconnect, or it replays its spool) is acked
/// when the first copy is stored, without storing it twice. Bounded per node; in memory, so it
/// covers reconnects and sensor replays, not a restart of this relay.
/// </summary>
public sealed class RecentBatches
{
    private const int PerNode = 65_536;
    private readonly ConcurrentDictionary<string, Window> _nodes = new(StringComparer.Ordinal);
    private long _duplicates;

    /// <summary>Duplicate batches acked without storing.</summary>
    public long Duplicates => Interlocked.Read(ref _duplicates);

    /// <summary>
    /// Returns the stored-task of an id seen before (counted as a duplicate), or null after
    /// recording the id with the task <paramref name="publish"/> returns.
    /// </summary>
    public async ValueTask<(Task Stored, bool Duplicate)> AcceptAsync(string node, ulong batchId, Func<ValueTask<Task>> publish)
    {
        var window = _nodes.GetOrAdd(node, _ => new Window());
        lock (window)
        {
            if (window.Stored.TryGetValue(batchId, out var earlier))
            {
                Interlocked.Increment(ref _duplicates);
                return (earlier, true);
            }
        }
        // One stream per node publishes its batches in order, so no other copy races this one.
        var stored = await publish();
        lock (window)
        {
            window.Stored[batchId] = stored;
            window.Order.Enqueue(batchId);
            if (window.Order.Count > PerNode)
            {
                window.Stored.Remove(window.Order.Dequeue());
            }
        }
        return (stored, false);
    }

    private sealed class Window
    {
        public Dictionary<ulong, Task> Stored { get; } = [];

        public Queue<ulong> Order { get; } = new();
    }
}
