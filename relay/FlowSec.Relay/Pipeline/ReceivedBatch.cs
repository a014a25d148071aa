using FlowSec.Api.V1;
using FlowSec.Relay.Storage;

namespace FlowSec.Relay.Pipeline;

/// <summary>
/// A sensor batch as ingest received it: its header (node, id, status, resent) and the events kept
/// as <see cref="Event"/> objects in <see cref="Batch"/>, plus the rows decoded at ingest straight
/// into a table's Native columns (flows), which never become objects on the way to storage.
/// </summary>
public sealed class ReceivedBatch
{
    // The decoded rows' count, kept apart from Rows: once queued, the writer copies the block and
    // hands it back to the pool (emptied, then refilled by another batch) while ingest still acks.
    private readonly int _rowCount;

    private ReceivedBatch(EventBatch batch, NativeBlock? rows, IReadOnlyList<Event>? liveEvents, ulong oldest)
    {
        Batch = batch;
        Rows = rows;
        _rowCount = rows?.Rows ?? 0;
        LiveEvents = liveEvents;
        OldestTimeUnixNano = oldest;
    }

    /// <summary>The batch's header, and its events that are stored (or counted as not stored) as objects.</summary>
    public EventBatch Batch { get; }

    /// <summary>
    /// Rows of <see cref="NativeBlock.Table"/> decoded from the batch at ingest (its events of that
    /// table's type), or null. Owned by the storage queue once the batch is queued: only the writer reads it then.
    /// </summary>
    internal NativeBlock? Rows { get; }

    /// <summary>
    /// Every event of the batch as an object, for live views, or null when none had a consumer when
    /// the batch arrived (then flows are not turned into objects at all).
    /// </summary>
    public IReadOnlyList<Event>? LiveEvents { get; }

    /// <summary>Events in the batch: objects (re-sent batches may lose some, already stored) and decoded rows.</summary>
    public int EventCount => Batch.Events.Count + _rowCount;

    /// <summary>The capture time of the batch's oldest event (<see cref="ulong.MaxValue"/> for an empty batch).</summary>
    public ulong OldestTimeUnixNano { get; }

    /// <summary>A batch parsed into objects (every event in <see cref="Batch"/>, which live views also get).</summary>
    public static ReceivedBatch FromObjects(EventBatch batch)
    {
        var oldest = ulong.MaxValue;
        foreach (var e in batch.Events)
        {
            oldest = Math.Min(oldest, e.TimeUnixNano);
        }

        return new ReceivedBatch(batch, null, batch.Events, oldest);
    }

    /// <summary>A batch whose events of one table were decoded into <paramref name="rows"/>; <paramref name="batch"/> holds the others.</summary>
    internal static ReceivedBatch WithRows(EventBatch batch, NativeBlock? rows, IReadOnlyList<Event>? liveEvents, ulong oldest) =>
        new(batch, rows, liveEvents, oldest);
}
