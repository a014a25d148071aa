using System.Text.RegularExpressions;

namespace FlowSec.Relay.Storage;

/// <summary>
/// A table derived from <c>flows</c> by a materialized view, which ClickHouse fills on every INSERT
/// into flows (whoever inserts): a SummingMergeTree of flow counts (and, for the hourly summaries,
/// byte and packet sums) per time bucket and key columns — an hourly summary for group-by queries,
/// or the per-minute count of flows to each <c>dst_port</c> for "newest flows to a port". Each holds
/// a subset of the flow columns under the same names, so a filter's SQL for flows runs on it
/// unchanged when every column the filter names is here (see <see cref="Covers"/>); queries that
/// name any other column read flows. Partitions are UTC days like the event tables', so retention
/// drops them the same way.
/// </summary>
internal sealed partial class FlowSummary
{
    /// <summary>The summed columns of a summary: flows (the row count) and the flow's byte and packet sums.</summary>
    /// <remarks>
    /// Named apart from the flows columns they sum: 18.16 resolves <c>sum(bytes_sent) AS bytes_sent</c>
    /// to a nested aggregate. <c>flows</c> is never 0, so SummingMergeTree never drops a row as all-zero.
    /// </remarks>
    private static readonly (string Name, string Expression)[] Sums =
    [
        ("flows", "count()"),
        ("sent_bytes", "sum(`bytes_sent`)"),
        ("received_bytes", "sum(`bytes_received`)"),
        ("sent_packets", "sum(`packets_sent`)"),
        ("received_packets", "sum(`packets_received`)"),
    ];

    private static readonly HashSet<string> AnyColumn = EventTables.All.SelectMany(t => t.ColumnNames).ToHashSet();

    private readonly HashSet<string> _columns;

    private readonly (string Name, string Expression)[] _sums;

    // Hourly summaries order by the hour first (a window's whole hours are one range of marks);
    // the per-minute port counts by the key first (one port's minutes together).
    private FlowSummary(string name, string[] keyColumns, bool hourly)
    {
        Name = SqlLiteral.Identifier(name);
        KeyColumns = keyColumns;
        IsSummary = hourly;
        BucketColumn = hourly ? "hour" : "minute";
        _sums = hourly ? Sums : Sums[..1];
        // No per-row time: the bucket stands for it (see ClickHouseEventStore).
        _columns = [.. keyColumns];
    }

    /// <summary>
    /// Per hour, the source side with verdict and drop reason: top talkers, drops by reason, what a
    /// pod sent. Small whatever the traffic's shape: hours × source pods × a few verdicts.
    /// </summary>
    public static FlowSummary Sources { get; } = new("flow_summary_src",
        ["node", "src_namespace", "src_pod", "src_workload", "protocol", "verdict", "drop_reason"], hourly: true);

    /// <summary>
    /// The number of flows to each destination port per minute, ordered by port: for "the newest N
    /// flows to port P" the minute from which on P has at least N flows is read from a few of this
    /// port's rows, not from every flow's port column; the whole rows then come from flows, from
    /// that minute on. Replaced a per-flow (port, time) index (schema version 10), which cost the
    /// server a row to insert and merge for every flow (see docs/benchmarks.md).
    /// </summary>
    public static FlowSummary DestinationPortMinutes { get; } = new("flow_dst_port_minutes", ["dst_port"], hourly: false);

    /// <summary>Every derived table, summaries smallest first (the order <see cref="SummaryFor"/> tries them).</summary>
    /// <remarks>
    /// A per-edge summary (adding destination namespace, pod, workload and port) was tried and left
    /// out: on the benchmark's traffic nearly every flow is an edge of its own within its hour (6.7 M
    /// summary rows for 10 M flows), so it answered no query faster while it made each INSERT into
    /// flows cost the server about 2.5 times as much (see docs/benchmarks.md). A fleet whose edges
    /// repeat may want it; adding it is one entry here and a migration.
    /// </remarks>
    public static IReadOnlyList<FlowSummary> All { get; } = [Sources, DestinationPortMinutes];

    /// <summary>Table name inside the FlowSec database.</summary>
    public string Name { get; }

    /// <summary>The materialized view that fills the table.</summary>
    public string ViewName => Name + "_mv";

    /// <summary>The flow columns the table keeps (besides the time bucket).</summary>
    public IReadOnlyList<string> KeyColumns { get; }

    /// <summary>Whether this is an hourly summary for group-by queries rather than the per-minute port counts.</summary>
    public bool IsSummary { get; }

    /// <summary>The time bucket column: <c>hour</c> or <c>minute</c>, the start of the bucket (DateTime, UTC).</summary>
    public string BucketColumn { get; }

    /// <summary>The smallest summary holding every one of <paramref name="columns"/>, or null.</summary>
    public static FlowSummary? SummaryFor(IEnumerable<string> columns)
    {
        var needed = columns.ToArray();
        return All.FirstOrDefault(s => s.IsSummary && s.Covers(needed));
    }

    /// <summary>Whether the table holds every one of <paramref name="columns"/>.</summary>
    public bool Covers(IEnumerable<string> columns) => columns.All(_columns.Contains);

    /// <summary>
    /// The flow columns a condition built by <see cref="EventFilterSql"/> for the flows table reads, or
    /// null when that cannot be told (a column named without backquotes). EventFilterSql quotes every
    /// column it names; string literals are skipped, so a user's value that looks like a column name
    /// is not taken for one.
    /// </summary>
    public static IReadOnlySet<string>? ColumnsOf(string condition)
    {
        var outside = StringLiteral().Replace(condition, "''");
        var columns = QuotedName().Matches(outside).Select(m => m.Groups[1].Value).ToHashSet();
        // Anything left that is a column's bare name (e.g. `query`, which the DNS-name filter names
        // so on the dns table) would be a reference this scan cannot vouch for.
        var bare = QuotedName().Replace(outside, " ");
        return Word().Matches(bare).Any(w => AnyColumn.Contains(w.Value)) ? null : columns;
    }

    /// <summary><c>CREATE TABLE IF NOT EXISTS</c> for the table, with the flows table's column types.</summary>
    public string CreateSql(string database, bool lowCardinality)
    {
        var types = FlowTable.Table.Columns.ToDictionary(c => c.Name, c => lowCardinality ? c.Type : c.Type.Replace("LowCardinality(String)", "String", StringComparison.Ordinal));
        var keys = string.Join("", KeyColumns.Select(c => $"`{c}` {types[c]}, "));
        IEnumerable<string> order = IsSummary ? [BucketColumn, .. KeyColumns] : [.. KeyColumns, BucketColumn];
        return $"CREATE TABLE IF NOT EXISTS {SqlLiteral.Identifier(database)}.{Name} (`{BucketColumn}` DateTime('UTC'), {keys}{string.Join(", ", _sums.Select(s => $"`{s.Name}` UInt64"))}) " +
               $"ENGINE = SummingMergeTree(({string.Join(", ", _sums.Select(s => s.Name))})) PARTITION BY toYYYYMMDD({BucketColumn}) " +
               $"ORDER BY ({string.Join(", ", order)})";
    }

    /// <summary>
    /// <c>CREATE MATERIALIZED VIEW</c> (deliberately without IF NOT EXISTS: the relay that creates it
    /// is the one that backfills, see <see cref="ClickHouseSchema"/>).
    /// </summary>
    public string CreateViewSql(string database) =>
        $"CREATE MATERIALIZED VIEW {SqlLiteral.Identifier(database)}.{ViewName} TO {SqlLiteral.Identifier(database)}.{Name} AS {SelectSql(database, null)}";

    /// <summary>The view's SELECT over the flows already stored in day partition <paramref name="day"/>, inserted into the table.</summary>
    public string BackfillSql(string database, int day) =>
        $"INSERT INTO {SqlLiteral.Identifier(database)}.{Name} ({string.Join(", ", InsertColumns())}) {SelectSql(database, day)}";

    private IEnumerable<string> InsertColumns() => [BucketColumn, .. KeyColumns, .. _sums.Select(s => s.Name)];

    private string SelectSql(string database, int? day)
    {
        var from = $"{SqlLiteral.Identifier(database)}.{FlowTable.Table.Name}" +
                   (day is { } d ? $" WHERE toYYYYMMDD(time) = {SqlLiteral.Integer((long)d)}" : "");
        var keys = string.Join(", ", KeyColumns.Select(c => $"`{c}`"));
        var bucket = IsSummary ? "toStartOfHour(time)" : "toStartOfMinute(time)";
        return $"SELECT {bucket} AS {BucketColumn}, {keys}, {string.Join(", ", _sums.Select(s => $"{s.Expression} AS {s.Name}"))} FROM {from} GROUP BY {BucketColumn}, {keys}";
    }

    /// <summary>The SUM of a summed column as the aggregate query names it: count, sent or received bytes.</summary>
    internal static string SumOf(string what) => what switch
    {
        "n" => "sum(`flows`)",
        "sent" => "sum(`sent_bytes`)",
        "received" => "sum(`received_bytes`)",
        _ => throw new ArgumentOutOfRangeException(nameof(what), what, null),
    };

    /// <summary>The start of the first whole hour at or after <paramref name="t"/>.</summary>
    internal static DateTimeOffset HourCeiling(DateTimeOffset t)
    {
        var floor = HourFloor(t);
        return floor == t ? t : floor.AddHours(1);
    }

    /// <summary>The start of the hour holding <paramref name="t"/>.</summary>
    internal static DateTimeOffset HourFloor(DateTimeOffset t) =>
        new(t.UtcTicks - t.UtcTicks % TimeSpan.TicksPerHour, TimeSpan.Zero);

    /// <summary>Unix seconds of the first whole minute at or after <paramref name="t"/>.</summary>
    internal static long MinuteCeilingSeconds(DateTimeOffset t) => (t.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks + TimeSpan.TicksPerMinute - 1) / TimeSpan.TicksPerMinute * 60;

    /// <summary>Unix seconds of the start of the minute holding <paramref name="t"/> (at or after 1970).</summary>
    internal static long MinuteFloorSeconds(DateTimeOffset t) => (t.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) / TimeSpan.TicksPerMinute * 60;

    // '…' with backslash escapes, as SqlLiteral writes them.
    [GeneratedRegex(@"'(?:[^'\\]|\\.)*'", RegexOptions.Singleline)]
    private static partial Regex StringLiteral();

    [GeneratedRegex("`([^`]*)`")]
    private static partial Regex QuotedName();

    [GeneratedRegex(@"[A-Za-z_][A-Za-z_0-9.]*")]
    private static partial Regex Word();
}
