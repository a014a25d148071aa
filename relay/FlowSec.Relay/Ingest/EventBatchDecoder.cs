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
/// arrive in), without becoming <see cref="Event"/> objects; other event types are parsed into objects
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
    private const int MaxLabelsDecoded = 64; // more labels than this on one endpoint: the object path (its duplicate-key check is quadratic here)

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
        var events = new List<ByteRange>();
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
        var fields = new FlowEventFields();
        var oldest = ulong.MaxValue;
        for (var i = 0; i < events.Count; i++)
        {
            fields.Read(message, events[i]);
            oldest = Math.Min(oldest, fields.Time);
            if (fields.Type != (int)EventType.Flow)
            {
                header.Events.Add(live?[i] ?? Event.Parser.ParseFrom(message.Slice(events[i].Start, events[i].Length)));
                continue;
            }

            rows ??= NativeBlockPool.Rent(FlowTable.Table);
            if (fields.NeedsObject)
            {
                // Parts this decoder does not read (another type's payload on a flow): through the object writers, in its place.
                var e = live?[i] ?? Event.Parser.ParseFrom(message.Slice(events[i].Start, events[i].Length));
                e.Node = header.Node;
                rows.Append(e, batchId);
            }
            else
            {
                rows.AppendRow(new FlowRow(fields, message, nodeBytes), batchId);
            }
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

    /// <summary>The stored fields of one event, as where they lie in the message (strings, bytes) or their values.</summary>
    private sealed class FlowEventFields
    {
        public ulong Time;
        public int Type;
        public ByteRange Capture;
        public readonly EndpointFields Source = new();
        public readonly EndpointFields Destination = new();
        public int Protocol;
        public ByteRange State;
        public ulong DurationNs;
        public ByteRange Direction;
        public int Verdict;
        public ByteRange DropReason;
        public ulong BytesSent;
        public ulong BytesReceived;
        public ulong PacketsSent;
        public ulong PacketsReceived;
        public uint RttUs;
        public uint Retransmits;
        public ulong SocketId;

        /// <summary>The event has parts this decoder does not store from (another type's payload, very many labels): parse it into an object.</summary>
        public bool NeedsObject;

        public void Read(ReadOnlySpan<byte> message, ByteRange range)
        {
            Time = 0;
            Type = 0;
            Capture = default;
            Source.Reset();
            Destination.Reset();
            Protocol = 0;
            State = default;
            DurationNs = 0;
            Direction = default;
            Verdict = 0;
            DropReason = default;
            BytesSent = BytesReceived = PacketsSent = PacketsReceived = SocketId = 0;
            RttUs = Retransmits = 0;
            NeedsObject = false;

            // Google.Protobuf's rules: the last value of a scalar wins, a message field seen twice merges.
            var reader = new ProtoReader(message, range.Start, range.End);
            while (!reader.AtEnd)
            {
                var tag = reader.ReadTag();
                switch (tag)
                {
                    case 9:
                        Time = reader.ReadFixed64();
                        break;
                    case 18:
                        reader.ReadString(); // the node: every row gets the batch's
                        break;
                    case 24:
                        Type = (int)(uint)reader.ReadVarint();
                        break;
                    case 34:
                        Capture = reader.ReadString();
                        break;
                    case 42:
                        NeedsObject |= !Source.Read(message, reader.ReadLengthDelimited());
                        break;
                    case 50:
                        NeedsObject |= !Destination.Read(message, reader.ReadLengthDelimited());
                        break;
                    case 58:
                        ReadFlow(message, reader.ReadLengthDelimited());
                        break;
                    case 66 or 74 or 82 or 90: // dns, process, file, alert
                        reader.ReadLengthDelimited();
                        NeedsObject = true;
                        break;
                    default:
                        reader.Skip(tag);
                        break;
                }
            }
        }

        private void ReadFlow(ReadOnlySpan<byte> message, ByteRange range)
        {
            var reader = new ProtoReader(message, range.Start, range.End);
            while (!reader.AtEnd)
            {
                var tag = reader.ReadTag();
                switch (tag)
                {
                    case 8:
                        Protocol = (int)(uint)reader.ReadVarint();
                        break;
                    case 18:
                        State = reader.ReadString();
                        break;
                    case 24:
                        DurationNs = reader.ReadVarint();
                        break;
                    case 34:
                        Direction = reader.ReadString();
                        break;
                    case 40:
                        Verdict = (int)(uint)reader.ReadVarint();
                        break;
                    case 50:
                        DropReason = reader.ReadString();
                        break;
                    case 56:
                        BytesSent = reader.ReadVarint();
                        break;
                    case 64:
                        BytesReceived = reader.ReadVarint();
                        break;
                    case 72:
                        PacketsSent = reader.ReadVarint();
                        break;
                    case 80:
                        PacketsReceived = reader.ReadVarint();
                        break;
                    case 88:
                        RttUs = (uint)reader.ReadVarint();
                        break;
                    case 96:
                        Retransmits = (uint)reader.ReadVarint();
                        break;
                    case 104:
                        SocketId = reader.ReadVarint();
                        break;
                    default:
                        reader.Skip(tag);
                        break;
                }
            }
        }
    }

    /// <summary>One endpoint's fields. Labels keep a map's order: a key seen again keeps its place and takes the new value.</summary>
    private sealed class EndpointFields
    {
        public ByteRange Ip;
        public uint Port;
        public uint Pid;
        public ByteRange Process;
        public ulong CgroupId;
        public ByteRange ContainerId;
        public ByteRange Workload;
        public ByteRange Pod;
        public ByteRange Namespace;
        public readonly List<(ByteRange Key, ByteRange Value)> Labels = [];
        public readonly List<ByteRange> Names = [];

        public void Reset()
        {
            Ip = Process = ContainerId = Workload = Pod = Namespace = default;
            Port = Pid = 0;
            CgroupId = 0;
            Labels.Clear();
            Names.Clear();
        }

        /// <summary>Reads (merges) one occurrence of the endpoint; false when it has more labels than this decoder stores.</summary>
        public bool Read(ReadOnlySpan<byte> message, ByteRange range)
        {
            var decodable = true;
            var reader = new ProtoReader(message, range.Start, range.End);
            while (!reader.AtEnd)
            {
                var tag = reader.ReadTag();
                switch (tag)
                {
                    case 10:
                        Ip = reader.ReadLengthDelimited();
                        break;
                    case 16:
                        Port = (uint)reader.ReadVarint();
                        break;
                    case 24:
                        Pid = (uint)reader.ReadVarint();
                        break;
                    case 34:
                        Process = reader.ReadString();
                        break;
                    case 40:
                        CgroupId = reader.ReadVarint();
                        break;
                    case 50:
                        ContainerId = reader.ReadString();
                        break;
                    case 58:
                        Workload = reader.ReadString();
                        break;
                    case 66:
                        Pod = reader.ReadString();
                        break;
                    case 74:
                        Namespace = reader.ReadString();
                        break;
                    case 82:
                        decodable &= ReadLabel(message, reader.ReadLengthDelimited());
                        break;
                    case 90:
                        Names.Add(reader.ReadString());
                        break;
                    default:
                        reader.Skip(tag);
                        break;
                }
            }

            return decodable;
        }

        private bool ReadLabel(ReadOnlySpan<byte> message, ByteRange range)
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

            if (Labels.Count >= MaxLabelsDecoded)
            {
                return false;
            }

            var keyBytes = message.Slice(key.Start, key.Length);
            for (var i = 0; i < Labels.Count; i++)
            {
                if (message.Slice(Labels[i].Key.Start, Labels[i].Key.Length).SequenceEqual(keyBytes))
                {
                    Labels[i] = (Labels[i].Key, value);
                    return true;
                }
            }

            Labels.Add((key, value));
            return true;
        }
    }

    /// <summary>A decoded flow as a row of the <c>flows</c> table: each column written as <see cref="FlowTable"/>'s writers write it.</summary>
    private readonly ref struct FlowRow(FlowEventFields fields, ReadOnlySpan<byte> message, ReadOnlySpan<byte> node) : IRowSource
    {
        private readonly ReadOnlySpan<byte> _message = message;
        private readonly ReadOnlySpan<byte> _node = node;

        public void Write(int column, RowBinaryWriter data)
        {
            var f = fields;
            switch (FlowColumns.Order[column])
            {
                case FlowColumn.Time:
                    data.WriteUInt32((uint)(f.Time / 1_000_000_000));
                    break;
                case FlowColumn.TimeNs:
                    data.WriteUInt64(f.Time);
                    break;
                case FlowColumn.Node:
                    data.WriteString(_node);
                    break;
                case FlowColumn.Capture:
                    WriteString(data, f.Capture);
                    break;
                case FlowColumn.Protocol:
                    data.WriteEnum8(FlowTable.StoredProtocol((Protocol)f.Protocol));
                    break;
                case FlowColumn.State:
                    WriteString(data, f.State);
                    break;
                case FlowColumn.DurationNs:
                    data.WriteUInt64(f.DurationNs);
                    break;
                case FlowColumn.Direction:
                    WriteString(data, f.Direction);
                    break;
                case FlowColumn.Verdict:
                    data.WriteEnum8(FlowTable.StoredVerdict((Verdict)f.Verdict));
                    break;
                case FlowColumn.DropReason:
                    WriteString(data, f.DropReason);
                    break;
                case FlowColumn.BytesSent:
                    data.WriteUInt64(f.BytesSent);
                    break;
                case FlowColumn.BytesReceived:
                    data.WriteUInt64(f.BytesReceived);
                    break;
                case FlowColumn.PacketsSent:
                    data.WriteUInt64(f.PacketsSent);
                    break;
                case FlowColumn.PacketsReceived:
                    data.WriteUInt64(f.PacketsReceived);
                    break;
                case FlowColumn.RttUs:
                    data.WriteUInt32(f.RttUs);
                    break;
                case FlowColumn.Retransmits:
                    data.WriteUInt32(f.Retransmits);
                    break;
                case FlowColumn.SocketId:
                    data.WriteUInt64(f.SocketId);
                    break;
                case var endpoint:
                    WriteEndpoint(data, endpoint < FlowColumn.DstIp ? f.Source : f.Destination,
                        (EndpointColumn)((endpoint - FlowColumn.SrcIp) % EndpointColumnCount));
                    break;
            }
        }

        private void WriteEndpoint(RowBinaryWriter data, EndpointFields p, EndpointColumn column)
        {
            switch (column)
            {
                case EndpointColumn.Ip:
                    EndpointColumns.WriteIp(data, _message.Slice(p.Ip.Start, p.Ip.Length));
                    break;
                case EndpointColumn.Port:
                    data.WriteUInt16((ushort)p.Port);
                    break;
                case EndpointColumn.Pid:
                    data.WriteUInt32(p.Pid);
                    break;
                case EndpointColumn.Process:
                    WriteString(data, p.Process);
                    break;
                case EndpointColumn.CgroupId:
                    data.WriteUInt64(p.CgroupId);
                    break;
                case EndpointColumn.ContainerId:
                    WriteString(data, p.ContainerId);
                    break;
                case EndpointColumn.Workload:
                    WriteString(data, p.Workload);
                    break;
                case EndpointColumn.Pod:
                    WriteString(data, p.Pod);
                    break;
                case EndpointColumn.Namespace:
                    WriteString(data, p.Namespace);
                    break;
                case EndpointColumn.Labels:
                    WriteLabels(data, p.Labels);
                    break;
                case EndpointColumn.Names:
                    WriteNames(data, p.Names);
                    break;
            }
        }

        // PackedStrings' form, as PackedStrings.WriteLabels writes it from a map, from the message's bytes.
        private void WriteLabels(RowBinaryWriter data, List<(ByteRange Key, ByteRange Value)> labels)
        {
            if (labels.Count == 0)
            {
                data.WriteVarUInt(0);
                return;
            }

            var length = 1;
            foreach (var (key, value) in labels)
            {
                length += PackedStrings.EscapedLength(Bytes(key)) + PackedStrings.EscapedLength(Bytes(value)) + 2;
            }

            data.WriteVarUInt((ulong)length);
            var span = data.Reserve(length);
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

        private void WriteNames(RowBinaryWriter data, List<ByteRange> names)
        {
            if (names.Count == 0)
            {
                data.WriteVarUInt(0);
                return;
            }

            var length = 1;
            foreach (var name in names)
            {
                length += PackedStrings.EscapedLength(Bytes(name)) + 1;
            }

            data.WriteVarUInt((ulong)length);
            var span = data.Reserve(length);
            var at = 0;
            foreach (var name in names)
            {
                span[at++] = (byte)PackedStrings.Separator;
                at += PackedStrings.CopyEscaped(Bytes(name), span[at..]);
            }

            span[at] = (byte)PackedStrings.Separator;
        }

        private ReadOnlySpan<byte> Bytes(ByteRange range) => _message.Slice(range.Start, range.Length);

        private void WriteString(RowBinaryWriter data, ByteRange value) => data.WriteString(_message.Slice(value.Start, value.Length));
    }

    private const int EndpointColumnCount = 11;

    /// <summary>An endpoint's columns, in <see cref="EndpointColumns"/>' order.</summary>
    private enum EndpointColumn
    {
        Ip,
        Port,
        Pid,
        Process,
        CgroupId,
        ContainerId,
        Workload,
        Pod,
        Namespace,
        Labels,
        Names,
    }

    /// <summary>The <c>flows</c> columns this decoder writes; the two endpoints' in <see cref="EndpointColumn"/> order each.</summary>
    private enum FlowColumn
    {
        Time,
        TimeNs,
        Node,
        Capture,
        SrcIp,
        DstIp = SrcIp + EndpointColumnCount,
        Protocol = DstIp + EndpointColumnCount,
        State,
        DurationNs,
        Direction,
        Verdict,
        DropReason,
        BytesSent,
        BytesReceived,
        PacketsSent,
        PacketsReceived,
        RttUs,
        Retransmits,
        SocketId,
    }

    /// <summary>Which value each column of <see cref="FlowTable.Table"/> holds, found by name, so the table's column order is the one truth.</summary>
    private static class FlowColumns
    {
        public static readonly FlowColumn[] Order = Resolve();

        private static FlowColumn[] Resolve()
        {
            string[] endpoint = ["ip", "port", "pid", "process", "cgroup_id", "container_id", "workload", "pod", "namespace", EndpointColumns.LabelsColumn, EndpointColumns.NamesColumn];
            var byName = new Dictionary<string, FlowColumn>
            {
                ["time"] = FlowColumn.Time,
                ["time_ns"] = FlowColumn.TimeNs,
                ["node"] = FlowColumn.Node,
                ["capture"] = FlowColumn.Capture,
                ["protocol"] = FlowColumn.Protocol,
                ["state"] = FlowColumn.State,
                ["duration_ns"] = FlowColumn.DurationNs,
                ["direction"] = FlowColumn.Direction,
                ["verdict"] = FlowColumn.Verdict,
                ["drop_reason"] = FlowColumn.DropReason,
                ["bytes_sent"] = FlowColumn.BytesSent,
                ["bytes_received"] = FlowColumn.BytesReceived,
                ["packets_sent"] = FlowColumn.PacketsSent,
                ["packets_received"] = FlowColumn.PacketsReceived,
                ["rtt_us"] = FlowColumn.RttUs,
                ["retransmits"] = FlowColumn.Retransmits,
                ["socket_id"] = FlowColumn.SocketId,
            };
            for (var i = 0; i < endpoint.Length; i++)
            {
                byName["src_" + endpoint[i]] = FlowColumn.SrcIp + i;
                byName["dst_" + endpoint[i]] = FlowColumn.DstIp + i;
            }

            // A column added to the flows table without a value here must fail at once, not store zeros.
            return FlowTable.Table.Columns.Select(c => byName.TryGetValue(c.Name, out var v)
                ? v
                : throw new InvalidOperationException($"EventBatchDecoder has no value for flows column {c.Name}.")).ToArray();
        }
    }
}
