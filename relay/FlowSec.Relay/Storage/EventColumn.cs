using System.Globalization;
using System.Text.Json;
using FlowSec.Api.V1;
using Google.Protobuf.Collections;

namespace FlowSec.Relay.Storage;

/// <summary>
/// One column of an <see cref="EventTable"/>: its name, ClickHouse type, how an <see cref="Event"/>
/// fills it (RowBinary) and how a JSONEachRow row fills an <see cref="Event"/> back.
/// <paramref name="Read"/> takes the whole row, so a column may read its neighbours (labels keys + values).
/// </summary>
internal sealed record EventColumn(string Name, string Type, Action<RowBinaryWriter, Event> Write, Action<Event, JsonElement> Read)
{
    /// <summary>A column that reads only its own value.</summary>
    public static EventColumn Of(string name, string type, Action<RowBinaryWriter, Event> write, Action<Event, JsonElement> read) =>
        new(name, type, write, (e, row) => read(e, row.GetProperty(name)));

    /// <summary>
    /// A column of a payload message. Writing an event without the payload writes the payload's
    /// defaults (from a shared empty instance, which is only read); reading creates the payload.
    /// </summary>
    public static EventColumn Of<T>(string name, string type, Func<Event, T?> get, Func<Event, T> getOrCreate, T empty,
        Action<RowBinaryWriter, T> write, Action<T, JsonElement> read)
        where T : class =>
        new(name, type, (w, e) => write(w, get(e) ?? empty), (e, row) => read(getOrCreate(e), row.GetProperty(name)));
}

/// <summary>A table's ENGINE, PARTITION BY and ORDER BY clause, and the ORDER BY expressions it holds.</summary>
/// <param name="Clause">The clause as CREATE TABLE takes it.</param>
/// <param name="SortKey">The ORDER BY expressions, in order (column names, or <c>toStartOfHour(time)</c>).</param>
internal sealed record TableEngine(string Clause, IReadOnlyList<string> SortKey);

/// <summary>Column definitions and value helpers shared by every event table.</summary>
internal static class EventColumns
{
    /// <summary>
    /// The columns every table starts with. time (DateTime) is what partitions, sort keys and every
    /// time function of 18.16 work on; time_ns keeps the exact nanoseconds (18.16 has no DateTime64)
    /// and orders rows within a second.
    /// </summary>
    public static IEnumerable<EventColumn> Common() =>
    [
        EventColumn.Of("time", "DateTime('UTC')", (w, e) => w.WriteUInt32((uint)(e.TimeUnixNano / 1_000_000_000)), (_, _) => { }),
        EventColumn.Of("time_ns", "UInt64", (w, e) => w.WriteUInt64(e.TimeUnixNano), (e, v) => e.TimeUnixNano = UInt64(v)),
        EventColumn.Of("node", "LowCardinality(String)", (w, e) => w.WriteString(e.Node), (e, v) => e.Node = v.GetString()!),
        EventColumn.Of("capture", "LowCardinality(String)", (w, e) => w.WriteString(e.Capture), (e, v) => e.Capture = v.GetString()!),
    ];

    /// <summary>
    /// The sort key every table uses: the hour bucket prunes by time (the server maps <c>time</c>
    /// bounds through the monotonic toStartOfHour), then the actor's namespace and pod narrow to one
    /// workload, then the table's own columns, then exact time. The Native writer sends rows already
    /// in this order, which spares the server its sort (see <see cref="NativeBlock"/>).
    /// </summary>
    public static TableEngine Engine(params string[] keyColumns)
    {
        string[] sortKey = ["toStartOfHour(time)", "src_namespace", "src_pod", .. keyColumns, "time_ns"];
        return new TableEngine($"ENGINE = MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY ({string.Join(", ", sortKey)})", sortKey);
    }

    /// <summary>A UInt64 from JSONEachRow, where 64-bit integers arrive as strings.</summary>
    public static ulong UInt64(JsonElement v) =>
        v.ValueKind == JsonValueKind.String ? ulong.Parse(v.GetString()!, CultureInfo.InvariantCulture) : v.GetUInt64();

    /// <summary>An <c>Enum8(…)</c> type from names and values.</summary>
    public static string Enum8<T>(IEnumerable<KeyValuePair<string, T>> names)
        where T : Enum =>
        "Enum8(" + string.Join(", ", names.Select(n => $"{SqlLiteral.String(n.Key)} = {Convert.ToInt32(n.Value, CultureInfo.InvariantCulture)}")) + ")";

    /// <summary>Writes an Array(String).</summary>
    public static void WriteStrings(RowBinaryWriter w, ICollection<string> values) => w.WriteArray(values, (w2, s) => w2.WriteString(s));

    /// <summary>Writes an Array(String) of a repeated field, by index (no enumerator allocated per row).</summary>
    public static void WriteStrings(RowBinaryWriter w, RepeatedField<string> values)
    {
        w.WriteVarUInt((ulong)values.Count);
        for (var i = 0; i < values.Count; i++)
        {
            w.WriteString(values[i]);
        }
    }

    /// <summary>Reads an Array(String).</summary>
    public static IEnumerable<string> ReadStrings(JsonElement v) => v.EnumerateArray().Select(s => s.GetString()!);
}
