using FlowSec.Api.V1;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Relay.Storage;

/// <summary>The <c>flows</c> table: common columns, source and destination endpoints, the flow.</summary>
internal static class FlowTable
{
    private static readonly Flow Empty = new();

    private static readonly Dictionary<string, Protocol> ProtocolNames = new()
    {
        ["unspecified"] = Protocol.Unspecified,
        ["ICMP"] = Protocol.Icmp,
        ["TCP"] = Protocol.Tcp,
        ["UDP"] = Protocol.Udp,
    };

    private static readonly Dictionary<string, Verdict> VerdictNames = new()
    {
        ["unspecified"] = Verdict.Unspecified,
        ["forwarded"] = Verdict.Forwarded,
        ["dropped"] = Verdict.Dropped,
    };

    /// <summary>The stored (Enum8) name of a protocol; unknown values are stored as 'unspecified'.</summary>
    public static string ProtocolName(Protocol protocol) => ProtocolNames.FirstOrDefault(n => n.Value == protocol).Key ?? "unspecified";

    /// <summary>The stored (Enum8) name of a verdict; unknown values are stored as 'unspecified'.</summary>
    public static string VerdictName(Verdict verdict) => VerdictNames.FirstOrDefault(n => n.Value == verdict).Key ?? "unspecified";

    /// <summary>The Enum8 value a protocol is stored as: unknown values (a newer sensor's) as 'unspecified', since a value the enum does not list would fail the whole INSERT.</summary>
    public static sbyte StoredProtocol(Protocol protocol) => ProtocolNames.ContainsValue(protocol) ? (sbyte)protocol : (sbyte)0;

    /// <summary>The Enum8 value a verdict is stored as: unknown values as 'unspecified'.</summary>
    public static sbyte StoredVerdict(Verdict verdict) => VerdictNames.ContainsValue(verdict) ? (sbyte)verdict : (sbyte)0;

    /// <summary>
    /// The table. Partitions are UTC days, so retention is <c>ALTER TABLE … DROP PARTITION</c> (18.16
    /// has no TTL). The sort key serves incident review, "what did pod X talk to between 02:00 and
    /// 02:15": hour bucket, the source's namespace and pod, then addresses, then exact time. Flows into
    /// a pod are found by the time bucket alone; a second sort order for the destination side belongs
    /// in a materialized view when that query needs to be fast.
    /// </summary>
    public static EventTable Table { get; } = new(
        "flows",
        [EventType.Flow],
        [
            .. EventColumns.Common(),
            .. EndpointColumns.Source(),
            .. EndpointColumns.Destination(),
            Col("protocol", EventColumns.Enum8(ProtocolNames),
                (w, f) => w.WriteEnum8(StoredProtocol(f.Protocol)),
                (f, v) => f.Protocol = ProtocolNames.TryGetValue(v.GetString()!, out var p) ? p : Protocol.Unspecified),
            Col("state", "LowCardinality(String)", (w, f) => w.WriteString(f.State), (f, v) => f.State = v.GetString()!),
            Col("duration_ns", "UInt64", (w, f) => w.WriteUInt64(f.DurationNs), (f, v) => f.DurationNs = EventColumns.UInt64(v)),
            Col("direction", "LowCardinality(String)", (w, f) => w.WriteString(f.Direction), (f, v) => f.Direction = v.GetString()!),
            Col("verdict", EventColumns.Enum8(VerdictNames),
                (w, f) => w.WriteEnum8(StoredVerdict(f.Verdict)),
                (f, v) => f.Verdict = VerdictNames.TryGetValue(v.GetString()!, out var p) ? p : Verdict.Unspecified),
            Col("drop_reason", "LowCardinality(String)", (w, f) => w.WriteString(f.DropReason), (f, v) => f.DropReason = v.GetString()!),
            Col("bytes_sent", "UInt64", (w, f) => w.WriteUInt64(f.BytesSent), (f, v) => f.BytesSent = EventColumns.UInt64(v)),
            Col("bytes_received", "UInt64", (w, f) => w.WriteUInt64(f.BytesReceived), (f, v) => f.BytesReceived = EventColumns.UInt64(v)),
            Col("packets_sent", "UInt64", (w, f) => w.WriteUInt64(f.PacketsSent), (f, v) => f.PacketsSent = EventColumns.UInt64(v)),
            Col("packets_received", "UInt64", (w, f) => w.WriteUInt64(f.PacketsReceived), (f, v) => f.PacketsReceived = EventColumns.UInt64(v)),
            Col("rtt_us", "UInt32", (w, f) => w.WriteUInt32(f.RttUs), (f, v) => f.RttUs = v.GetUInt32()),
            Col("retransmits", "UInt32", (w, f) => w.WriteUInt32(f.Retransmits), (f, v) => f.Retransmits = v.GetUInt32()),
            Col("socket_id", "UInt64", (w, f) => w.WriteUInt64(f.SocketId), (f, v) => f.SocketId = EventColumns.UInt64(v)),
        ],
        EventColumns.Engine("src_ip", "dst_ip"),
        () => new Event { Type = EventType.Flow, Source = new Endpoint(), Destination = new Endpoint(), Flow = new Flow() });

    private static EventColumn Col(string name, string type, Action<RowBinaryWriter, Flow> write, Action<Flow, System.Text.Json.JsonElement> read) =>
        EventColumn.Of(name, type, e => e.Flow, e => e.Flow ??= new Flow(), Empty, write, read);
}
