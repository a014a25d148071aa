using FlowSec.Api.V1;

namespace FlowSec.Relay.Storage;

/// <summary>
/// A field <c>flowsec query --group-by</c> accepts: its user-facing name (the JSON path of the
/// event), the stored columns it groups on, and the SQL expression that turns those into text
/// (applied to the groups, not to every row). Only these names reach SQL, so a group-by cannot
/// inject anything.
/// </summary>
public sealed class GroupByField
{
    // The stored address as users write it: a.b.c.d for IPv4 (stored IPv4-mapped), IPv6 text, '' for none.
    private const string IpText =
        "if({0} = toFixedString(unhex('00000000000000000000000000000000'), 16), '', replaceRegexpOne(IPv6NumToString({0}), '^::ffff:([0-9.]+)$', '\\\\1'))";

    private readonly string[] _columns;
    private readonly Func<EventTable, string> _text;

    // columns: what is grouped on (none for a constant); text: the value as users see it, over those columns.
    private GroupByField(string name, string[] columns, Func<EventTable, string> text)
    {
        Name = name;
        _columns = columns;
        _text = text;
    }

    /// <summary>The name users write, e.g. <c>source.pod</c>.</summary>
    public string Name { get; }

    /// <summary>Every field, in the order they are listed to users.</summary>
    public static IReadOnlyList<GroupByField> All { get; } =
    [
        Column("node", "node"),
        new("type", [], t => t.Name switch
        {
            "process_events" => "toString(`event`)",
            _ => "'" + EventTypeName(t.Types[0]) + "'",
        }),
        .. Endpoint("source", "src"),
        .. Endpoint("destination", "dst"),
        new("protocol", ["protocol"], _ => "lower(toString(`protocol`))"),
        Column("state", "state"),
        Column("direction", "direction"),
        new("verdict", ["verdict"], _ => "toString(`verdict`)"),
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

    /// <summary>Whether <paramref name="table"/> stores the field.</summary>
    internal bool AppliesTo(EventTable table) => _columns.All(table.ColumnNames.Contains);

    /// <summary>The stored columns grouped on (for the process table's <c>type</c>, its <c>event</c> column).</summary>
    internal IReadOnlyList<string> Columns(EventTable table) => Name == "type" && table.ColumnNames.Contains("event") ? ["event"] : _columns;

    /// <summary>The text of the field over <see cref="Columns"/>.</summary>
    internal string Text(EventTable table) => _text(table);

    private static GroupByField Column(string name, string column) => new(name, [column], _ => $"toString(`{column}`)");

    private static IEnumerable<GroupByField> Endpoint(string side, string prefix) =>
    [
        Column(side + ".namespace", prefix + "_namespace"),
        // namespace/pod, since pod names repeat across namespaces; '' when there is no pod.
        new(side + ".pod", [prefix + "_namespace", prefix + "_pod"], _ => $"if(`{prefix}_pod` = '', '', concat(`{prefix}_namespace`, '/', `{prefix}_pod`))"),
        Column(side + ".workload", prefix + "_workload"),
        Column(side + ".process", prefix + "_process"),
        new(side + ".ip", [prefix + "_ip"], _ => string.Format(System.Globalization.CultureInfo.InvariantCulture, IpText, $"`{prefix}_ip`")),
        Column(side + ".port", prefix + "_port"),
    ];

    private static string EventTypeName(EventType type) => Api.Json.EventJson.TypeName(type);
}
