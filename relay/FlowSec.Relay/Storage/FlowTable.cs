using System.Globalization;
using System.Text.Json;
using FlowSec.Api.V1;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Relay.Storage;

/// <summary>
/// The <c>flows</c> table in one place: each column's name, ClickHouse type, how an
/// <see cref="Event"/> fills it (RowBinary) and how a row fills an <see cref="Event"/> back, so the
/// DDL, the writer and the query cannot disagree.
/// </summary>
internal static class FlowTable
{
    /// <summary>Table name inside the FlowSec database.</summary>
    public const string Name = "flows";

    /// <summary>
    /// Partitions are UTC days, so retention is <c>ALTER TABLE … DROP PARTITION</c> (18.16 has no TTL).
    /// The sort key serves incident review, "what did pod X talk to between 02:00 and 02:15": the
    /// hour bucket prunes by time (the server maps <c>time</c> bounds through the monotonic
    /// toStartOfHour), then namespace and pod narrow to one workload, then addresses, then exact time.
    /// Flows into a pod are found by the time bucket alone; a second sort order for the destination
    /// side belongs in a materialized view when that query needs to be fast.
    /// </summary>
    public const string EngineClause =
        "ENGINE = MergeTree PARTITION BY toYYYYMMDD(time) " +
        "ORDER BY (toStartOfHour(time), src_namespace, src_pod, src_ip, dst_ip, time_ns)";

    private static readonly Dictionary<string, Protocol> ProtocolNames = new()
    {
        ["unspecified"] = Protocol.Unspecified, ["ICMP"] = Protocol.Icmp, ["TCP"] = Protocol.Tcp, ["UDP"] = Protocol.Udp,
    };

    private static readonly Dictionary<string, Verdict> VerdictNames = new()
    {
        ["unspecified"] = Verdict.Unspecified, ["forwarded"] = Verdict.Forwarded, ["dropped"] = Verdict.Dropped,
    };

    // time (DateTime) is what partitions, the sort key and every time function of 18.16 work on;
    // time_ns keeps the exact nanoseconds (18.16 has no DateTime64) and orders rows within a second.
    public static readonly IReadOnlyList<FlowColumn> Columns =
    [
        EventColumn("time", "DateTime('UTC')", (w, e) => w.WriteUInt32((uint)(e.TimeUnixNano / 1_000_000_000)), (_, _) => { }),
        EventColumn("time_ns", "UInt64", (w, e) => w.WriteUInt64(e.TimeUnixNano), (e, v) => e.TimeUnixNano = UInt64(v)),
        EventColumn("node", "LowCardinality(String)", (w, e) => w.WriteString(e.Node), (e, v) => e.Node = v.GetString()!),
        EventColumn("capture", "LowCardinality(String)", (w, e) => w.WriteString(e.Capture), (e, v) => e.Capture = v.GetString()!),
        .. EndpointColumns("src", e => e.Source ?? new Endpoint(), e => e.Source ??= new Endpoint()),
        .. EndpointColumns("dst", e => e.Destination ?? new Endpoint(), e => e.Destination ??= new Endpoint()),
        // A value the enum does not list would fail the whole INSERT, so unknown values store as 'unspecified'.
        FlowColumn("protocol", Enum8(ProtocolNames),
            (w, f) => w.WriteEnum8(ProtocolNames.ContainsValue(f.Protocol) ? (sbyte)f.Protocol : (sbyte)0),
            (f, v) => f.Protocol = ProtocolNames.TryGetValue(v.GetString()!, out var p) ? p : Protocol.Unspecified),
        FlowColumn("state", "LowCardinality(String)", (w, f) => w.WriteString(f.State), (f, v) => f.State = v.GetString()!),
        FlowColumn("duration_ns", "UInt64", (w, f) => w.WriteUInt64(f.DurationNs), (f, v) => f.DurationNs = UInt64(v)),
        FlowColumn("direction", "LowCardinality(String)", (w, f) => w.WriteString(f.Direction), (f, v) => f.Direction = v.GetString()!),
        FlowColumn("verdict", Enum8(VerdictNames),
            (w, f) => w.WriteEnum8(VerdictNames.ContainsValue(f.Verdict) ? (sbyte)f.Verdict : (sbyte)0),
            (f, v) => f.Verdict = VerdictNames.TryGetValue(v.GetString()!, out var p) ? p : Verdict.Unspecified),
        FlowColumn("drop_reason", "LowCardinality(String)", (w, f) => w.WriteString(f.DropReason), (f, v) => f.DropReason = v.GetString()!),
        FlowColumn("bytes_sent", "UInt64", (w, f) => w.WriteUInt64(f.BytesSent), (f, v) => f.BytesSent = UInt64(v)),
        FlowColumn("bytes_received", "UInt64", (w, f) => w.WriteUInt64(f.BytesReceived), (f, v) => f.BytesReceived = UInt64(v)),
        FlowColumn("packets_sent", "UInt64", (w, f) => w.WriteUInt64(f.PacketsSent), (f, v) => f.PacketsSent = UInt64(v)),
        FlowColumn("packets_received", "UInt64", (w, f) => w.WriteUInt64(f.PacketsReceived), (f, v) => f.PacketsReceived = UInt64(v)),
        FlowColumn("rtt_us", "UInt32", (w, f) => w.WriteUInt32(f.RttUs), (f, v) => f.RttUs = v.GetUInt32()),
        FlowColumn("retransmits", "UInt32", (w, f) => w.WriteUInt32(f.Retransmits), (f, v) => f.Retransmits = v.GetUInt32()),
        FlowColumn("socket_id", "UInt64", (w, f) => w.WriteUInt64(f.SocketId), (f, v) => f.SocketId = UInt64(v)),
    ];

    /// <summary>Column names in row order, for INSERT.</summary>
    public static readonly IReadOnlyList<string> ColumnNames = Columns.Select(c => c.Name).ToArray();

    /// <summary>
    /// <c>CREATE TABLE IF NOT EXISTS</c> for the table in <paramref name="database"/>. Without
    /// <paramref name="lowCardinality"/> (18.x, where the type is experimental and made inserts of
    /// this table 2.5 times slower here) LowCardinality(String) columns are plain String; RowBinary
    /// is the same for both.
    /// </summary>
    public static string CreateSql(string database, bool lowCardinality) =>
        $"CREATE TABLE IF NOT EXISTS {SqlLiteral.Identifier(database)}.{Name}\n(\n    " +
        string.Join(",\n    ", Columns.Select(c => $"`{c.Name}` {(lowCardinality ? c.Type : c.Type.Replace("LowCardinality(String)", "String", StringComparison.Ordinal))}")) +
        $"\n)\n{EngineClause}";

    /// <summary>The select list: FixedString addresses through hex(), since JSON cannot carry raw bytes.</summary>
    public static string SelectList() =>
        string.Join(", ", Columns.Select(c => c.Type.StartsWith("FixedString", StringComparison.Ordinal) ? $"hex(`{c.Name}`) AS `{c.Name}`" : $"`{c.Name}`"));

    /// <summary>Appends one event as a row.</summary>
    public static void WriteRow(RowBinaryWriter writer, Event e)
    {
        foreach (var column in Columns)
        {
            column.Write(writer, e);
        }
    }

    /// <summary>Rebuilds a flow event from a JSONEachRow row.</summary>
    public static Event ReadRow(JsonElement row)
    {
        var e = new Event { Type = EventType.Flow, Source = new Endpoint(), Destination = new Endpoint(), Flow = new Flow() };
        foreach (var column in Columns)
        {
            column.Read(e, row);
        }

        return e;
    }

    private static IEnumerable<FlowColumn> EndpointColumns(string prefix, Func<Event, Endpoint> get, Func<Event, Endpoint> getOrCreate)
    {
        FlowColumn Col(string name, string type, Action<RowBinaryWriter, Endpoint> write, Action<Endpoint, JsonElement> read) =>
            new($"{prefix}_{name}", type, (w, e) => write(w, get(e)), (e, row) => read(getOrCreate(e), row.GetProperty($"{prefix}_{name}")));

        return
        [
            Col("ip", "FixedString(16)", (w, p) => WriteIp(w, p.Ip.Span), (p, v) => p.Ip = IpFromFixed16(v.GetString()!)),
            Col("port", "UInt16", (w, p) => w.WriteUInt16((ushort)p.Port), (p, v) => p.Port = v.GetUInt32()),
            Col("pid", "UInt32", (w, p) => w.WriteUInt32(p.Pid), (p, v) => p.Pid = v.GetUInt32()),
            Col("process", "LowCardinality(String)", (w, p) => w.WriteString(p.Process), (p, v) => p.Process = v.GetString()!),
            Col("cgroup_id", "UInt64", (w, p) => w.WriteUInt64(p.CgroupId), (p, v) => p.CgroupId = UInt64(v)),
            Col("container_id", "String", (w, p) => w.WriteString(p.ContainerId), (p, v) => p.ContainerId = v.GetString()!),
            Col("workload", "LowCardinality(String)", (w, p) => w.WriteString(p.Workload), (p, v) => p.Workload = v.GetString()!),
            Col("pod", "String", (w, p) => w.WriteString(p.Pod), (p, v) => p.Pod = v.GetString()!),
            Col("namespace", "LowCardinality(String)", (w, p) => w.WriteString(p.Namespace), (p, v) => p.Namespace = v.GetString()!),
            // Nested(key, value) is stored as these two arrays; declaring them directly keeps one column model.
            Col("labels.key", "Array(String)", (w, p) => w.WriteArray(p.Labels.Keys, (w2, k) => w2.WriteString(k)), (_, _) => { }),
            new($"{prefix}_labels.value", "Array(String)", (w, e) => w.WriteArray(get(e).Labels.Values, (w2, s) => w2.WriteString(s)),
                (e, row) => ReadLabels(getOrCreate(e), row.GetProperty($"{prefix}_labels.key"), row.GetProperty($"{prefix}_labels.value"))),
            Col("names", "Array(String)", (w, p) => w.WriteArray(p.Names, (w2, s) => w2.WriteString(s)),
                (p, v) => p.Names.AddRange(v.EnumerateArray().Select(n => n.GetString()!))),
        ];
    }

    // Keys and values are read together, when the value column comes by.
    private static void ReadLabels(Endpoint endpoint, JsonElement keys, JsonElement values)
    {
        foreach (var (key, value) in keys.EnumerateArray().Zip(values.EnumerateArray()))
        {
            endpoint.Labels[key.GetString()!] = value.GetString()!;
        }
    }

    private static FlowColumn EventColumn(string name, string type, Action<RowBinaryWriter, Event> write, Action<Event, JsonElement> read) =>
        new(name, type, write, (e, row) => read(e, row.GetProperty(name)));

    private static FlowColumn FlowColumn(string name, string type, Action<RowBinaryWriter, Flow> write, Action<Flow, JsonElement> read) =>
        new(name, type, (w, e) => write(w, e.Flow ?? new Flow()), (e, row) => read(e.Flow ??= new Flow(), row.GetProperty(name)));

    private static ulong UInt64(JsonElement v) =>
        v.ValueKind == JsonValueKind.String ? ulong.Parse(v.GetString()!, CultureInfo.InvariantCulture) : v.GetUInt64();

    private static string Enum8<T>(Dictionary<string, T> names)
        where T : Enum =>
        "Enum8(" + string.Join(", ", names.Select(n => $"{SqlLiteral.String(n.Key)} = {Convert.ToInt32(n.Value, CultureInfo.InvariantCulture)}")) + ")";

    // IPv4 as IPv4-mapped IPv6; no address (or a malformed one) as ::.
    private static void WriteIp(RowBinaryWriter writer, ReadOnlySpan<byte> ip)
    {
        Span<byte> v6 = stackalloc byte[16];
        v6.Clear();
        if (ip.Length == 4)
        {
            v6[10] = 0xff;
            v6[11] = 0xff;
            ip.CopyTo(v6[12..]);
        }
        else if (ip.Length == 16)
        {
            ip.CopyTo(v6);
        }

        writer.WriteFixedString(v6, 16);
    }

    private static ByteString IpFromFixed16(string hex)
    {
        var bytes = Convert.FromHexString(hex);
        if (bytes.All(b => b == 0))
        {
            return ByteString.Empty;
        }

        var isV4Mapped = bytes.AsSpan(0, 10).IndexOfAnyExcept((byte)0) < 0 && bytes[10] == 0xff && bytes[11] == 0xff;
        return ByteString.CopyFrom(isV4Mapped ? bytes.AsSpan(12, 4) : bytes);
    }
}

/// <summary>One column of <see cref="FlowTable"/>: <paramref name="Read"/> takes the whole JSON row.</summary>
internal sealed record FlowColumn(string Name, string Type, Action<RowBinaryWriter, Event> Write, Action<Event, JsonElement> Read);
