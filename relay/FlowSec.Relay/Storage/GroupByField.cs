using FlowSec.Api.V1;

namespace FlowSec.Relay.Storage;

/// <summary>
/// A field <c>flowsec query --group-by</c> accepts: its user-facing name (the JSON path of the
/// event) and the SQL expression that yields it as text on each table that stores it. Only these
/// names reach SQL, so a group-by cannot inject anything.
/// </summary>
public sealed class GroupByField
{
    // The stored address as users write it: a.b.c.d for IPv4 (stored IPv4-mapped), IPv6 text, '' for none.
    private const string IpText =
        "if({0} = toFixedString(unhex('00000000000000000000000000000000'), 16), '', replaceRegexpOne(IPv6NumToString({0}), '^::ffff:([0-9.]+)$', '\\\\1'))";

    private readonly string? _column;
    private readonly Func<EventTable, string?> _sql;

    private GroupByField(string name, string? column, Func<EventTable, string?> sql)
    {
        Name = name;
        _column = column;
        _sql = sql;
    }

    /// <summary>The name users write, e.g. <c>source.pod</c>.</summary>
    public string Name { get; }

    /// <summary>Every field, in the order they are listed to users.</summary>
    public static IReadOnlyList<GroupByField> All { get; } =
    [
        Column("node", "node"),
        new("type", null, t => t.Name switch
        {
            "process_events" => "toString(`event`)",
            _ => "'" + EventTypeName(t.Types[0]) + "'",
        }),
        .. Endpoint("source", "src"),
        .. Endpoint("destination", "dst"),
        new("protocol", "protocol", _ => "lower(toString(`protocol`))"),
        Column("state", "state"),
        Column("direction", "direction"),
        new("verdict", "verdict", _ => "toString(`verdict`)"),
        Column("drop_reason", "drop_reason"),
        Column("dns.query", "query"),
        Column("dns.qtype", "qtype"),
        Column("dns.rcode", "rcode"),
        Column("process.exe", "exe"),
        Column("process.parent_exe", "parent_exe"),
        Column("file.path", "path"),
        Column("file.op", "op"),
        Column("alert.rule", "rule"),
        Column("alert.priority", "priority"),
    ];

    /// <summary>Looks up a field by name.</summary>
    /// <exception cref="ArgumentException">Unknown name; the message lists the valid ones.</exception>
    public static GroupByField Parse(string name) =>
        All.FirstOrDefault(f => f.Name == name)
        ?? throw new ArgumentException($"unknown group-by field '{name}'; valid fields: {string.Join(", ", All.Select(f => f.Name))}");

    /// <summary>The text expression on <paramref name="table"/>, or null when the table does not store the field.</summary>
    internal string? Sql(EventTable table) => _column is null || table.ColumnNames.Contains(_column) ? _sql(table) : null;

    private static GroupByField Column(string name, string column) => new(name, column, _ => $"toString(`{column}`)");

    private static IEnumerable<GroupByField> Endpoint(string side, string prefix) =>
    [
        Column(side + ".namespace", prefix + "_namespace"),
        // namespace/pod, since pod names repeat across namespaces; '' when there is no pod.
        new(side + ".pod", prefix + "_pod", _ => $"if(`{prefix}_pod` = '', '', concat(`{prefix}_namespace`, '/', `{prefix}_pod`))"),
        Column(side + ".workload", prefix + "_workload"),
        Column(side + ".process", prefix + "_process"),
        new(side + ".ip", prefix + "_ip", _ => string.Format(System.Globalization.CultureInfo.InvariantCulture, IpText, $"`{prefix}_ip`")),
        Column(side + ".port", prefix + "_port"),
    ];

    private static string EventTypeName(EventType type) => Api.Json.EventJson.TypeName(type);
}
