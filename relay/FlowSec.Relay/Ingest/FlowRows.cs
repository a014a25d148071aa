using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using FlowSec.Api.V1;
using FlowSec.Relay.Storage;

namespace FlowSec.Relay.Ingest;

/// <summary>
/// A run of flow events decoded from one batch's protobuf bytes into their fields (numbers as
/// values; strings and addresses as where they lie in the bytes), appended to a block of the
/// <c>flows</c> table column by column (<see cref="NativeBlock.AppendColumns{TSource}"/>): per column
/// one dispatch and a tight loop over the run's rows, instead of a dispatch, a capacity check and
/// row-end bookkeeping for every value of every row.
/// </summary>
/// <remarks>
/// Reading follows Google.Protobuf's rules (the last value of a scalar wins, a message field seen
/// twice merges, labels keep a map's order: a key seen again keeps its place and takes the new
/// value), and each column is written as <see cref="FlowTable"/>'s column writers write it, so the
/// block's bytes are those of the object path. One instance per thread is reused
/// (<see cref="ForCurrentThread"/>): a batch is decoded synchronously on one thread. A run holds at
/// most <see cref="Capacity"/> events, about 80 KB of fields, which stay in cache while the column
/// loops read them again.
/// </remarks>
internal sealed class FlowRows
{
    /// <summary>Events a run holds: the caller appends the run when <see cref="Keep"/> says it is full.</summary>
    public const int Capacity = 256;

    private const int MaxLabelsDecoded = 64; // more labels than this on one endpoint: the object path (its duplicate-key check is quadratic here)

    [ThreadStatic]
    private static FlowRows? t_perThread;

    private readonly FlowEvent[] _events = new FlowEvent[Capacity];
    private readonly List<(ByteRange Key, ByteRange Value)> _labels = []; // the run's endpoints' labels, each endpoint's together
    private readonly List<ByteRange> _names = [];
    private int _labelsKept;
    private int _namesKept;

    /// <summary>Events kept as rows of the run so far.</summary>
    public int Count { get; private set; }

    /// <summary>This thread's run, empty.</summary>
    public static FlowRows ForCurrentThread()
    {
        var rows = t_perThread ??= new FlowRows();
        rows.Clear(); // a batch that failed half-way may have left rows
        return rows;
    }

    /// <summary>
    /// Decodes the event at <paramref name="range"/> of <paramref name="message"/> into the slot after
    /// the rows kept; it becomes a row only if <see cref="Keep"/> follows (else the next read overwrites it).
    /// </summary>
    /// <exception cref="MalformedProtobufException">The event is not protobuf this reader accepts.</exception>
    public DecodedEvent Read(ReadOnlySpan<byte> message, ByteRange range)
    {
        CollectionsMarshal.SetCount(_labels, _labelsKept);
        CollectionsMarshal.SetCount(_names, _namesKept);
        ref var e = ref _events[Count];
        e = default;
        var reader = new ProtoReader(message, range.Start, range.End);
        while (!reader.AtEnd)
        {
            var tag = reader.ReadTag();
            switch (tag)
            {
                case 9:
                    e.Numbers[(int)NumberSlot.Time] = reader.ReadFixed64();
                    break;
                case 18:
                    reader.ReadString(); // the node: every row gets the batch's
                    break;
                case 24:
                    e.Type = (int)(uint)reader.ReadVarint();
                    break;
                case 34:
                    e.Ranges[(int)RangeSlot.Capture] = reader.ReadString();
                    break;
                case 42:
                    e.NeedsObject |= !ReadEndpoint(ref e, Source, message, reader.ReadLengthDelimited());
                    break;
                case 50:
                    e.NeedsObject |= !ReadEndpoint(ref e, Destination, message, reader.ReadLengthDelimited());
                    break;
                case 58:
                    ReadFlow(ref e, message, reader.ReadLengthDelimited());
                    break;
                case 66 or 74 or 82 or 90: // dns, process, file, alert
                    reader.ReadLengthDelimited();
                    e.NeedsObject = true;
                    break;
                default:
                    reader.Skip(tag);
                    break;
            }
        }

        return new DecodedEvent(e.Numbers[(int)NumberSlot.Time], e.Type, e.NeedsObject);
    }

    /// <summary>Keeps the event just read as the run's next row.</summary>
    /// <returns>Whether the run is full now (append it before reading on).</returns>
    public bool Keep()
    {
        Count++;
        _labelsKept = _labels.Count;
        _namesKept = _names.Count;
        return Count == Capacity;
    }

    /// <summary>Appends the rows kept to <paramref name="block"/> (of <see cref="FlowTable.Table"/>), column by column, and empties the run.</summary>
    /// <param name="block">The batch's block.</param>
    /// <param name="message">The batch's bytes, which the rows were read from.</param>
    /// <param name="node">The batch's node (UTF-8), every row's <c>node</c>.</param>
    /// <param name="batchId">The batch's id.</param>
    public void AppendTo(NativeBlock block, ReadOnlySpan<byte> message, ReadOnlySpan<byte> node, ulong batchId)
    {
        var columns = new Columns(this, message, node);
        block.AppendColumns(ref columns, Count, batchId);
        Clear();
    }

    private void Clear()
    {
        Count = 0;
        _labels.Clear();
        _names.Clear();
        _labelsKept = _namesKept = 0;
    }

    private static void ReadFlow(ref FlowEvent e, ReadOnlySpan<byte> message, ByteRange range)
    {
        var reader = new ProtoReader(message, range.Start, range.End);
        while (!reader.AtEnd)
        {
            var tag = reader.ReadTag();
            switch (tag)
            {
                case 8:
                    e.Numbers[(int)NumberSlot.Protocol] = reader.ReadVarint();
                    break;
                case 18:
                    e.Ranges[(int)RangeSlot.State] = reader.ReadString();
                    break;
                case 24:
                    e.Numbers[(int)NumberSlot.DurationNs] = reader.ReadVarint();
                    break;
                case 34:
                    e.Ranges[(int)RangeSlot.Direction] = reader.ReadString();
                    break;
                case 40:
                    e.Numbers[(int)NumberSlot.Verdict] = reader.ReadVarint();
                    break;
                case 50:
                    e.Ranges[(int)RangeSlot.DropReason] = reader.ReadString();
                    break;
                case 56:
                    e.Numbers[(int)NumberSlot.BytesSent] = reader.ReadVarint();
                    break;
                case 64:
                    e.Numbers[(int)NumberSlot.BytesReceived] = reader.ReadVarint();
                    break;
                case 72:
                    e.Numbers[(int)NumberSlot.PacketsSent] = reader.ReadVarint();
                    break;
                case 80:
                    e.Numbers[(int)NumberSlot.PacketsReceived] = reader.ReadVarint();
                    break;
                case 88:
                    e.Numbers[(int)NumberSlot.RttUs] = reader.ReadVarint();
                    break;
                case 96:
                    e.Numbers[(int)NumberSlot.Retransmits] = reader.ReadVarint();
                    break;
                case 104:
                    e.Numbers[(int)NumberSlot.SocketId] = reader.ReadVarint();
                    break;
                default:
                    reader.Skip(tag);
                    break;
            }
        }
    }

    /// <summary>Reads (merges) one occurrence of an endpoint; false when it has more labels than this decoder stores.</summary>
    private bool ReadEndpoint(ref FlowEvent e, int side, ReadOnlySpan<byte> message, ByteRange range)
    {
        var number = side * EndpointNumbers;
        var bytes = side * EndpointRanges;
        ref var lists = ref side == Source ? ref e.SourceLists : ref e.DestinationLists;
        var decodable = true;
        var reader = new ProtoReader(message, range.Start, range.End);
        while (!reader.AtEnd)
        {
            var tag = reader.ReadTag();
            switch (tag)
            {
                case 10:
                    e.Ranges[(int)RangeSlot.SrcIp + bytes] = reader.ReadLengthDelimited();
                    break;
                case 16:
                    e.Numbers[(int)NumberSlot.SrcPort + number] = reader.ReadVarint();
                    break;
                case 24:
                    e.Numbers[(int)NumberSlot.SrcPid + number] = reader.ReadVarint();
                    break;
                case 34:
                    e.Ranges[(int)RangeSlot.SrcProcess + bytes] = reader.ReadString();
                    break;
                case 40:
                    e.Numbers[(int)NumberSlot.SrcCgroupId + number] = reader.ReadVarint();
                    break;
                case 50:
                    e.Ranges[(int)RangeSlot.SrcContainerId + bytes] = reader.ReadString();
                    break;
                case 58:
                    e.Ranges[(int)RangeSlot.SrcWorkload + bytes] = reader.ReadString();
                    break;
                case 66:
                    e.Ranges[(int)RangeSlot.SrcPod + bytes] = reader.ReadString();
                    break;
                case 74:
                    e.Ranges[(int)RangeSlot.SrcNamespace + bytes] = reader.ReadString();
                    break;
                case 82:
                    decodable &= ReadLabel(ref lists, message, reader.ReadLengthDelimited());
                    break;
                case 90:
                    AddName(ref lists, reader.ReadString());
                    break;
                default:
                    reader.Skip(tag);
                    break;
            }
        }

        return decodable;
    }

    private bool ReadLabel(ref EndpointLists lists, ReadOnlySpan<byte> message, ByteRange range)
    {
        ByteRange key = default, value = default;
        var reader = new ProtoReader(message, range.Start, range.End);
        while (!reader.AtEnd)
        {
            var tag = reader.ReadTag();
            switch (tag)
            {
                case 10:
                    key = reader.ReadString();
                    break;
                case 18:
                    value = reader.ReadString();
                    break;
                default:
                    reader.Skip(tag);
                    break;
            }
        }

        if (lists.LabelCount >= MaxLabelsDecoded)
        {
            return false;
        }

        var keyBytes = message.Slice(key.Start, key.Length);
        var labels = CollectionsMarshal.AsSpan(_labels).Slice(lists.LabelStart, lists.LabelCount);
        for (var i = 0; i < labels.Length; i++)
        {
            if (message.Slice(labels[i].Key.Start, labels[i].Key.Length).SequenceEqual(keyBytes))
            {
                labels[i].Value = value;
                return true;
            }
        }

        lists.LabelStart = MoveToEnd(_labels, lists.LabelStart, lists.LabelCount);
        _labels.Add((key, value));
        lists.LabelCount++;
        return true;
    }

    private void AddName(ref EndpointLists lists, ByteRange name)
    {
        lists.NameStart = MoveToEnd(_names, lists.NameStart, lists.NameCount);
        _names.Add(name);
        lists.NameCount++;
    }

    // An endpoint's items stay together at the end of the run's list while it is read: when the same
    // endpoint occurs again after the other one added items (Google.Protobuf merges the two), its items
    // are copied to the end first. Returns where they start now.
    private static int MoveToEnd<T>(List<T> items, int start, int count)
    {
        if (count == 0)
        {
            return items.Count;
        }

        if (start + count != items.Count)
        {
            var moved = items.Count;
            for (var i = 0; i < count; i++)
            {
                items.Add(items[start + i]);
            }

            return moved;
        }

        return start;
    }

    /// <summary>What the decoder needs of an event it read: when it happened, its type, and whether it needs the object path.</summary>
    /// <param name="TimeUnixNano">The event's time.</param>
    /// <param name="Type">Its <see cref="EventType"/> as sent (values no sensor sends today included).</param>
    /// <param name="NeedsObject">It has parts this decoder does not store from (another type's payload, very many labels): parse it into an object.</param>
    public readonly record struct DecodedEvent(ulong TimeUnixNano, int Type, bool NeedsObject);

    private const int Source = 0;
    private const int Destination = 1;
    private const int EndpointNumbers = 3;
    private const int EndpointRanges = 6;

    /// <summary>An event's number fields, in <see cref="FlowEvent.Numbers"/>: the destination's endpoint numbers follow the source's.</summary>
    private enum NumberSlot
    {
        Time,
        DurationNs,
        BytesSent,
        BytesReceived,
        PacketsSent,
        PacketsReceived,
        RttUs,
        Retransmits,
        SocketId,
        Protocol,
        Verdict,
        SrcPort,
        SrcPid,
        SrcCgroupId,
        DstPort = SrcPort + EndpointNumbers,
        Count = DstPort + EndpointNumbers,
    }

    /// <summary>An event's strings and addresses, in <see cref="FlowEvent.Ranges"/>: the destination's follow the source's.</summary>
    private enum RangeSlot
    {
        Capture,
        State,
        Direction,
        DropReason,
        SrcIp,
        SrcProcess,
        SrcContainerId,
        SrcWorkload,
        SrcPod,
        SrcNamespace,
        DstIp = SrcIp + EndpointRanges,
        Count = DstIp + EndpointRanges,
    }

    /// <summary>One flow event's stored fields. Numbers are kept as read (64 bits); each column narrows them as its writer does.</summary>
    private struct FlowEvent
    {
        public Numbers Numbers;
        public Ranges Ranges;
        public EndpointLists SourceLists;
        public EndpointLists DestinationLists;
        public int Type;
        public bool NeedsObject;
    }

    /// <summary>Where an endpoint's labels and names are in the run's lists.</summary>
    private struct EndpointLists
    {
        public int LabelStart;
        public int LabelCount;
        public int NameStart;
        public int NameCount;
    }

    [InlineArray((int)NumberSlot.Count)]
    private struct Numbers
    {
        private ulong _first;
    }

    [InlineArray((int)RangeSlot.Count)]
    private struct Ranges
    {
        private ByteRange _first;
    }

    /// <summary>How a <c>flows</c> column's values are made from the fields.</summary>
    private enum ColumnKind
    {
        /// <summary>DateTime: the event time's whole seconds.</summary>
        Seconds,
        UInt64,
        UInt32,
        UInt16,
        Protocol,
        Verdict,
        Node,
        String,
        Ip,
        Labels,
        Names,
    }

    /// <summary>A <c>flows</c> column's value: its kind and the slot (or, for labels and names, the side) it comes from.</summary>
    private readonly record struct ColumnValue(ColumnKind Kind, int Slot);

    /// <summary>The value of each column of <see cref="FlowTable.Table"/>, found by name, so the table's column order is the one truth.</summary>
    private static class FlowColumns
    {
        public static readonly ColumnValue[] Order = Resolve();

        private static ColumnValue[] Resolve()
        {
            var byName = new Dictionary<string, ColumnValue>
            {
                ["time"] = new(ColumnKind.Seconds, (int)NumberSlot.Time),
                ["time_ns"] = new(ColumnKind.UInt64, (int)NumberSlot.Time),
                ["node"] = new(ColumnKind.Node, 0),
                ["capture"] = new(ColumnKind.String, (int)RangeSlot.Capture),
                ["protocol"] = new(ColumnKind.Protocol, (int)NumberSlot.Protocol),
                ["state"] = new(ColumnKind.String, (int)RangeSlot.State),
                ["duration_ns"] = new(ColumnKind.UInt64, (int)NumberSlot.DurationNs),
                ["direction"] = new(ColumnKind.String, (int)RangeSlot.Direction),
                ["verdict"] = new(ColumnKind.Verdict, (int)NumberSlot.Verdict),
                ["drop_reason"] = new(ColumnKind.String, (int)RangeSlot.DropReason),
                ["bytes_sent"] = new(ColumnKind.UInt64, (int)NumberSlot.BytesSent),
                ["bytes_received"] = new(ColumnKind.UInt64, (int)NumberSlot.BytesReceived),
                ["packets_sent"] = new(ColumnKind.UInt64, (int)NumberSlot.PacketsSent),
                ["packets_received"] = new(ColumnKind.UInt64, (int)NumberSlot.PacketsReceived),
                ["rtt_us"] = new(ColumnKind.UInt32, (int)NumberSlot.RttUs),
                ["retransmits"] = new(ColumnKind.UInt32, (int)NumberSlot.Retransmits),
                ["socket_id"] = new(ColumnKind.UInt64, (int)NumberSlot.SocketId),
            };
            foreach (var (prefix, side) in new[] { ("src_", Source), ("dst_", Destination) })
            {
                var number = side * EndpointNumbers;
                var bytes = side * EndpointRanges;
                byName[prefix + "ip"] = new(ColumnKind.Ip, (int)RangeSlot.SrcIp + bytes);
                byName[prefix + "port"] = new(ColumnKind.UInt16, (int)NumberSlot.SrcPort + number);
                byName[prefix + "pid"] = new(ColumnKind.UInt32, (int)NumberSlot.SrcPid + number);
                byName[prefix + "process"] = new(ColumnKind.String, (int)RangeSlot.SrcProcess + bytes);
                byName[prefix + "cgroup_id"] = new(ColumnKind.UInt64, (int)NumberSlot.SrcCgroupId + number);
                byName[prefix + "container_id"] = new(ColumnKind.String, (int)RangeSlot.SrcContainerId + bytes);
                byName[prefix + "workload"] = new(ColumnKind.String, (int)RangeSlot.SrcWorkload + bytes);
                byName[prefix + "pod"] = new(ColumnKind.String, (int)RangeSlot.SrcPod + bytes);
                byName[prefix + "namespace"] = new(ColumnKind.String, (int)RangeSlot.SrcNamespace + bytes);
                byName[prefix + EndpointColumns.LabelsColumn] = new(ColumnKind.Labels, side);
                byName[prefix + EndpointColumns.NamesColumn] = new(ColumnKind.Names, side);
            }

            // A column added to the flows table without a value here must fail at once, not store zeros.
            return FlowTable.Table.Columns.Select(c => byName.TryGetValue(c.Name, out var v)
                ? v
                : throw new InvalidOperationException($"FlowRows has no value for flows column {c.Name}.")).ToArray();
        }
    }

    /// <summary>The run's rows as the <c>flows</c> table's columns: each written as <see cref="FlowTable"/>'s writers write it.</summary>
    private readonly ref struct Columns(FlowRows rows, ReadOnlySpan<byte> message, ReadOnlySpan<byte> node) : IColumnSource
    {
        private readonly ReadOnlySpan<byte> _message = message;
        private readonly ReadOnlySpan<byte> _node = node;

        public void WriteColumn(int column, ref NativeBlock.ColumnValues values)
        {
            var events = rows._events.AsSpan(0, rows.Count);
            var (kind, slot) = FlowColumns.Order[column];
            switch (kind)
            {
                case ColumnKind.Seconds:
                    var seconds = values.Fixed<uint>();
                    for (var r = 0; r < events.Length; r++)
                    {
                        seconds[r] = (uint)(events[r].Numbers[slot] / 1_000_000_000);
                    }

                    break;
                case ColumnKind.UInt64:
                    var u64 = values.Fixed<ulong>();
                    for (var r = 0; r < events.Length; r++)
                    {
                        u64[r] = events[r].Numbers[slot];
                    }

                    break;
                case ColumnKind.UInt32:
                    var u32 = values.Fixed<uint>();
                    for (var r = 0; r < events.Length; r++)
                    {
                        u32[r] = (uint)events[r].Numbers[slot];
                    }

                    break;
                case ColumnKind.UInt16:
                    var u16 = values.Fixed<ushort>();
                    for (var r = 0; r < events.Length; r++)
                    {
                        u16[r] = (ushort)events[r].Numbers[slot];
                    }

                    break;
                case ColumnKind.Protocol:
                    var protocols = values.Fixed<sbyte>();
                    for (var r = 0; r < events.Length; r++)
                    {
                        protocols[r] = FlowTable.StoredProtocol((Protocol)(int)events[r].Numbers[slot]);
                    }

                    break;
                case ColumnKind.Verdict:
                    var verdicts = values.Fixed<sbyte>();
                    for (var r = 0; r < events.Length; r++)
                    {
                        verdicts[r] = FlowTable.StoredVerdict((Verdict)(int)events[r].Numbers[slot]);
                    }

                    break;
                case ColumnKind.Node:
                    for (var r = 0; r < events.Length; r++)
                    {
                        values.String(_node);
                    }

                    break;
                case ColumnKind.String:
                    for (var r = 0; r < events.Length; r++)
                    {
                        var value = events[r].Ranges[slot];
                        values.String(_message, value.Start, value.Length);
                    }

                    break;
                case ColumnKind.Ip:
                    var ips = values.Fixed(16);
                    for (var r = 0; r < events.Length; r++)
                    {
                        EndpointColumns.StoreIp(Bytes(events[r].Ranges[slot]), ips.Slice(r * 16, 16));
                    }

                    break;
                case ColumnKind.Labels:
                    for (var r = 0; r < events.Length; r++)
                    {
                        ref readonly var lists = ref slot == Source ? ref events[r].SourceLists : ref events[r].DestinationLists;
                        WriteLabels(ref values, CollectionsMarshal.AsSpan(rows._labels).Slice(lists.LabelStart, lists.LabelCount));
                    }

                    break;
                case ColumnKind.Names:
                    for (var r = 0; r < events.Length; r++)
                    {
                        ref readonly var lists = ref slot == Source ? ref events[r].SourceLists : ref events[r].DestinationLists;
                        WriteNames(ref values, CollectionsMarshal.AsSpan(rows._names).Slice(lists.NameStart, lists.NameCount));
                    }

                    break;
            }
        }

        // PackedStrings' form, as PackedStrings.WriteLabels writes it from a map, from the message's bytes.
        private void WriteLabels(ref NativeBlock.ColumnValues values, ReadOnlySpan<(ByteRange Key, ByteRange Value)> labels)
        {
            if (labels.IsEmpty)
            {
                values.String(0);
                return;
            }

            var length = 1;
            foreach (var (key, value) in labels)
            {
                length += PackedStrings.EscapedLength(Bytes(key)) + PackedStrings.EscapedLength(Bytes(value)) + 2;
            }

            var span = values.String(length);
            var at = 0;
            foreach (var (key, value) in labels)
            {
                span[at++] = (byte)PackedStrings.Separator;
                at += PackedStrings.CopyEscaped(Bytes(key), span[at..]);
                span[at++] = (byte)PackedStrings.KeyValue;
                at += PackedStrings.CopyEscaped(Bytes(value), span[at..]);
            }

            span[at] = (byte)PackedStrings.Separator;
        }

        private void WriteNames(ref NativeBlock.ColumnValues values, ReadOnlySpan<ByteRange> names)
        {
            if (names.IsEmpty)
            {
                values.String(0);
                return;
            }

            var length = 1;
            foreach (var name in names)
            {
                length += PackedStrings.EscapedLength(Bytes(name)) + 1;
            }

            var span = values.String(length);
            var at = 0;
            foreach (var name in names)
            {
                span[at++] = (byte)PackedStrings.Separator;
                at += PackedStrings.CopyEscaped(Bytes(name), span[at..]);
            }

            span[at] = (byte)PackedStrings.Separator;
        }

        private ReadOnlySpan<byte> Bytes(ByteRange range) => _message.Slice(range.Start, range.Length);
    }
}
