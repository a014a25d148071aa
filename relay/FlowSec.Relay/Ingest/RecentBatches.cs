using System.Collections.Concurrent;

namespace FlowSec.Relay.Ingest;

/// <summary>
/// Batch ids recently accepted per node, with the task that completes when each is stored, so a
/// batch a sensor sends again (its ack was lost in a reconnect, or it replays its spool) is acked
/// when the first copy is stored, without storing it twice. Bounded per node; in memory, so it
/// covers reconnects and sensor replays, not a restart of this relay (a re-sent batch it does not
/// know is looked up in ClickHouse, see <see cref="Storage.StoredBatches"/>). Counts every
/// duplicate skipped, either way.
/// </summary>
public sealed class RecentBatches
{
    private const int PerNode = 65_536;
    private readonly ConcurrentDictionary<string, Window> _nodes = new(StringComparer.Ordinal);
    private long _duplicates;
    private long _duplicateEvents;

    /// <summary>Re-sent batches acked without storing (all of them, or the part already stored).</summary>
    public long Duplicates => Interlocked.Read(ref _duplicates);

    /// <summary>Events of re-sent batches not stored again.</summary>
    public long DuplicateEvents => Interlocked.Read(ref _duplicateEvents);

    /// <summary>Counts a re-sent batch of which <paramref name="events"/> events were already stored.</summary>
    public void CountSkipped(int events)
    {
        Interlocked.Increment(ref _duplicates);
        Interlocked.Add(ref _duplicateEvents, events);
    }

    /// <summary>
    /// Returns the stored-task of an id seen before (counted as a duplicate), or null after
    /// recording the id with the task <paramref name="publish"/> returns. An earlier copy that was
    /// withdrawn (its stream ended before the writer took it, see
    /// <see cref="Pipeline.EventPipeline.Withdraw"/>) does not count: this copy is published instead.
    /// </summary>
    public async ValueTask<(Task Stored, bool Duplicate)> AcceptAsync(string node, ulong batchId, int events, Func<ValueTask<Task>> publish)
    {
        var window = _nodes.GetOrAdd(node, _ => new Window());
        lock (window)
        {
            if (window.Stored.TryGetValue(batchId, out var earlier) && !earlier.IsCanceled)
            {
                if (earlier.IsCompletedSuccessfully)
                {
                    CountSkipped(events);
                    return (earlier, true);
                }

                return (FollowAsync(earlier, node, batchId, events, publish), true);
            }
        }
        // One stream per node publishes its batches in order, so no other copy races this one.
        var stored = await publish();
        lock (window)
        {
            if (window.Stored.TryAdd(batchId, stored))
            {
                window.Order.Enqueue(batchId);
                if (window.Order.Count > PerNode)
                {
                    window.Stored.Remove(window.Order.Dequeue());
                }
            }
            else
            {
                window.Stored[batchId] = stored; // replaces a withdrawn copy
            }
        }
        return (stored, false);
    }

    // Waits for the first copy; if it is withdrawn meanwhile (its stream's end raced this copy's
    // arrival), publishes this copy instead, so the sensor still gets its ack.
    private async Task FollowAsync(Task earlier, string node, ulong batchId, int events, Func<ValueTask<Task>> publish)
    {
        try
        {
            await earlier;
        }
        catch (OperationCanceledException) when (earlier.IsCanceled)
        {
            var (stored, _) = await AcceptAsync(node, batchId, events, publish);
            await stored;
            return;
        }

        CountSkipped(events);
    }

    private sealed class Window
    {
        public Dictionary<ulong, Task> Stored { get; } = [];

        public Queue<ulong> Order { get; } = new();
    }
}
