using System.Text;
using FlowSec.Api.V1;
using FlowSec.Relay.Pipeline;
using FlowSec.Relay.Storage;
using Google.Protobuf;

namespace FlowSec.Relay.Ingest;

/// <summary>
/// Turns a received <c>EventBatch</c>'s protobuf bytes into a <see cref="ReceivedBatch"/>, on the
/// sensor stream's own read loop. Flow events, almost all of what sensors send, are decoded straight
/// into a per-batch block of the <c>flows</c> table's Native columns (strings copied as the UTF-8 they
/// arrive in), without becoming <see cref="Event"/> objects (a run at a time, column by column: see
/// <see cref="FlowRows"/>); other event types are parsed into objects
/// as before. Parsing a flow into objects, collecting those objects and re-encoding their UTF-16
/// strings as UTF-8 was about half of the relay's CPU per stored flow.
/// </summary>
/// <remarks>
/// Validation stays where it was: a batch that does not decode is refused here, before it is
/// queued or acked, and its rows never reach a block shared with other batches. The reader is at
/// least as strict as Google.Protobuf (see <see cref="ProtoReader"/>); whatever it refuses, or any
/// other failure of this decoder, is handed to Google.Protobuf's parser for the whole batch, which
/// either throws its usual error or yields the objects the relay stored before this decoder existed.
/// So the accepted input, the error messages and the stored rows are Google.Protobuf's; a test
/// compares the blocks of both paths over random batches.
/// </remarks>
public sealed class EventBatchDecoder
{
    [ThreadStatic]
    private static List<ByteRange>? t_events;

    private readonly bool _decodeFlows;
    private long _parsedAsObjects;

    /// <summary>Creates a decoder.</summary>
    /// <param name="decodeFlows">Whether flows are decoded into Native columns (only for Native inserts; RowBinary inserts keep the object path).</param>
    public EventBatchDecoder(bool decodeFlows) => _decodeFlows = decodeFlows;

    /// <summary>Batches this decoder's reader refused or failed on, which Google.Protobuf then parsed (or refused).</summary>
    public long BatchesHandedToProtobuf => Interlocked.Read(ref _parsedAsObjects);

    /// <summary>Decodes one batch.</summary>
    /// <param name="message">The <c>EventBatch</c> bytes; only read during the call.</param>
    /// <param name="liveEvents">Whether live views have consumers: then every event is also parsed into an object for them.</param>
    /// <exception cref="InvalidProtocolBufferException">The batch is not a valid <c>EventBatch</c> (Google.Protobuf's message).</exception>
    public ReceivedBatch Decode(ReadOnlySpan<byte> message, bool liveEvents)
    {
        if (!_decodeFlows)
        {
            return ReceivedBatch.FromObjects(EventBatch.Parser.ParseFrom(message));
        }

        NativeBlock? rows = null;
        try
        {
            return DecodeFlowRows(message, liveEvents, ref rows);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Refused by the strict reader (or a failure of this decoder): Google.Protobuf judges.
            if (rows is not null)
            {
                NativeBlockPool.Return(rows);
            }

            Interlocked.Increment(ref _parsedAsObjects);
            return ReceivedBatch.FromObjects(EventBatch.Parser.ParseFrom(message));
        }
    }

    private static ReceivedBatch DecodeFlowRows(ReadOnlySpan<byte> message, bool liveEvents, ref NativeBlock? rows)
    {
        // The batch's own fields first (they may come in any order): the node and id stamp every row.
        var reader = new ProtoReader(message, 0, message.Length);
        ByteRange node = default;
        ulong batchId = 0;
        var resent = false;
        var events = t_events ??= [];
        events.Clear(); // kept per thread: a list grown to a batch's 4,096 events was 16 bytes allocated a row
        List<ByteRange>? status = null;
        while (!reader.AtEnd)
        {
            var tag = reader.ReadTag();
            switch (tag)
            {
                case 10:
                    node = reader.ReadString();
                    break;
                case 16:
                    batchId = reader.ReadVarint();
                    break;
                case 26:
                    events.Add(reader.ReadLengthDelimited());
                    break;
                case 34:
                    (status ??= []).Add(reader.ReadLengthDelimited());
                    break;
                case 40:
                    resent = reader.ReadVarint() != 0;
                    break;
                default:
                    reader.Skip(tag);
                    break;
            }
        }

        if (resent)
        {
            // Rare (after a reconnect), and checked against storage event by event: the object path.
            return ReceivedBatch.FromObjects(EventBatch.Parser.ParseFrom(message));
        }

        var nodeBytes = message.Slice(node.Start, node.Length);
        var header = new EventBatch { Node = Encoding.UTF8.GetString(nodeBytes), BatchId = batchId };
        if (status is not null)
        {
            // Several occurrences of a message field merge, as Google.Protobuf parses them.
            header.Status = new SensorStatus();
            foreach (var part in status)
            {
                header.Status.MergeFrom(message.Slice(part.Start, part.Length));
            }
        }

        var live = liveEvents ? EventBatch.Parser.ParseFrom(message).Events : null;
        var flows = FlowRows.ForCurrentThread();
        var oldest = ulong.MaxValue;
        for (var i = 0; i < events.Count; i++)
        {
            var read = flows.Read(message, events[i]);
            oldest = Math.Min(oldest, read.TimeUnixNano);
            if (read.Type != (int)EventType.Flow)
            {
                header.Events.Add(live?[i] ?? Event.Parser.ParseFrom(message.Slice(events[i].Start, events[i].Length)));
                continue;
            }

            rows ??= NativeBlockPool.Rent(FlowTable.Table);
            if (read.NeedsObject)
            {
                // Parts this decoder does not read (another type's payload on a flow): through the object
                // writers, in its place, after the decoded flows before it.
                flows.AppendTo(rows, message, nodeBytes, batchId);
                var e = live?[i] ?? Event.Parser.ParseFrom(message.Slice(events[i].Start, events[i].Length));
                e.Node = header.Node;
                rows.Append(e, batchId);
            }
            else if (flows.Keep())
            {
                flows.AppendTo(rows, message, nodeBytes, batchId);
            }
        }

        if (rows is not null)
        {
            flows.AppendTo(rows, message, nodeBytes, batchId);
        }

        if (live is not null)
        {
            foreach (var e in live)
            {
                e.Node = header.Node;
            }
        }

        return ReceivedBatch.WithRows(header, rows, live, oldest);
    }
}
