using System.Buffers;
using FlowSec.Api.V1;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace FlowSec.Sensor.Export;

/// <summary>
/// An <see cref="EventBatch"/> held as its wire bytes: each event is encoded when the exporter takes
/// it from the queue (<see cref="Add"/>), while it is young and in the caches, and only the bytes
/// wait for the batch to leave and be acked. Written, it gives exactly the bytes
/// <c>batch.ToByteArray()</c> gives for the same batch.
/// </summary>
/// <remarks>
/// Why: an event's object graph (about a dozen objects, ~1 KB) used to wait up to the batch deadline
/// (100 ms) in the queue and the batch, so every gen0 GC promoted the last 100 ms of flows, and
/// enrichment and encoding walked them after they had left the caches (docs/benchmarks.md, issue 3,
/// fourth session). Bytes sit in pooled 64 KiB segments: no references for the GC to trace, and
/// nothing on the large object heap. The header fields (<see cref="Node"/>, <see cref="BatchId"/>,
/// <see cref="Status"/>, <see cref="Resent"/>) are written around the events when the batch is
/// written, so they may be set after the events are added.
/// </remarks>
internal sealed class EventBatchBytes : WriteOnlyMessage
{
    private const int SegmentBytes = 64 * 1024;
    // Each event as it appears inside the batch: tag 26 (field 3, length-delimited), length, event.
    private const byte EventTag = 26;

    private readonly List<byte[]> _segments = [];
    private readonly List<int> _used = [];
    private int _eventBytes;

    /// <summary>The node named in the batch.</summary>
    public string Node { get; set; } = "";

    /// <summary>The batch id the relay acks.</summary>
    public ulong BatchId { get; set; }

    /// <summary>The sensor's status carried by this batch, if any.</summary>
    public SensorStatus? Status { get; set; }

    /// <summary>Whether the batch was sent before (the relay then checks whether it stored it already).</summary>
    public bool Resent { get; set; }

    /// <summary>Events added.</summary>
    public int EventCount { get; private set; }

    /// <inheritdoc />
    public override MessageDescriptor Descriptor => EventBatch.Descriptor;

    /// <summary>Encodes <paramref name="e"/> into the batch; later changes to the event are not sent.</summary>
    public void Add(Event e)
    {
        var encoder = EventEncoding.ForThisThread;
        int total = encoder.Prepare(e);
        var segment = Room(total);
        encoder.Write(segment.AsSpan(_used[^1], total));
        Added(total);
    }

    /// <summary>Adds an event <see cref="Encode"/> encoded (enriched and encoded where it was queued).</summary>
    public void AddEncoded(ReadOnlySpan<byte> encoded)
    {
        var segment = Room(encoded.Length);
        encoded.CopyTo(segment.AsSpan(_used[^1]));
        Added(encoded.Length);
    }

    /// <summary>
    /// <paramref name="e"/> as it appears inside a batch (tag, length, event), for
    /// <see cref="AddEncoded"/>; safe to call from any thread.
    /// </summary>
    public static byte[] Encode(Event e)
    {
        var encoder = EventEncoding.ForThisThread;
        var bytes = new byte[encoder.Prepare(e)];
        encoder.Write(bytes);
        return bytes;
    }

    /// <summary>
    /// Hands the segments back to the pool. Only once no write of this batch can still be running
    /// (the relay acked it, so its one write finished); the batch is empty afterwards.
    /// </summary>
    public void Release()
    {
        foreach (var segment in _segments)
        {
            ArrayPool<byte>.Shared.Return(segment);
        }
        _segments.Clear();
        _used.Clear();
        _eventBytes = 0;
        EventCount = 0;
    }

    /// <inheritdoc />
    public override int CalculateSize() => BatchFieldsSize(Node, BatchId, Status, Resent) + _eventBytes;

    /// <inheritdoc />
    public override void InternalWriteTo(ref WriteContext output)
    {
        WriteBatchHead(ref output, Node, BatchId);
        for (int s = 0; s < _segments.Count; s++)
        {
            var segment = _segments[s];
            int end = _used[s];
            int at = 0;
            while (at < end)
            {
                // WriteContext has no raw-bytes write: a length-delimited field is written as bytes
                // (tag, the same varint length, then the event's bytes as they are).
                at++; // the tag, always EventTag
                int length = ReadLength(segment, ref at);
                output.WriteRawTag(EventTag);
                output.WriteBytes(UnsafeByteOperations.UnsafeWrap(segment.AsMemory(at, length)));
                at += length;
            }
        }
        WriteBatchTail(ref output, Status, Resent);
    }

    private void Added(int bytes)
    {
        _used[^1] += bytes;
        _eventBytes += bytes;
        EventCount++;
    }

    private byte[] Room(int bytes)
    {
        if (_segments.Count > 0 && _segments[^1].Length - _used[^1] >= bytes)
        {
            return _segments[^1];
        }
        // A new segment; the tail of the last one stays unused (an event is never split).
        var segment = ArrayPool<byte>.Shared.Rent(Math.Max(SegmentBytes, bytes));
        _segments.Add(segment);
        _used.Add(0);
        return segment;
    }

    private static int ReadLength(byte[] bytes, ref int at)
    {
        int value = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte b = bytes[at++];
            value |= (b & 0x7f) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }
    }
}
