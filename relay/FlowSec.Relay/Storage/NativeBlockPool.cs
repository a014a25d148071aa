namespace FlowSec.Relay.Storage;

/// <summary>
/// Unsorted <see cref="NativeBlock"/>s that hold one sensor batch's rows from ingest until the
/// writer copies them into its block, kept for reuse: a batch of 4,096 flows is about 1.5 MB of
/// column buffers, which would otherwise be allocated (and collected) for every batch.
/// </summary>
internal static class NativeBlockPool
{
    /// <summary>Blocks kept per table at most: the storage queue holds about 16 full sensor batches, plus those being decoded.</summary>
    private const int MaxKept = 32;

    private static readonly Lock Gate = new();
    private static readonly Dictionary<EventTable, Stack<NativeBlock>> Free = [];

    /// <summary>An empty, unsorted block for <paramref name="table"/>.</summary>
    public static NativeBlock Rent(EventTable table)
    {
        lock (Gate)
        {
            if (Free.TryGetValue(table, out var free) && free.TryPop(out var block))
            {
                return block;
            }
        }

        return new NativeBlock(table, sortRows: false);
    }

    /// <summary>Empties <paramref name="block"/> and keeps it for the next <see cref="Rent"/> (unless enough are kept already).</summary>
    public static void Return(NativeBlock block)
    {
        block.Clear();
        lock (Gate)
        {
            if (!Free.TryGetValue(block.Table, out var free))
            {
                Free[block.Table] = free = new Stack<NativeBlock>();
            }

            if (free.Count < MaxKept)
            {
                free.Push(block);
            }
        }
    }
}
