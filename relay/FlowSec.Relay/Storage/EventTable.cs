using System.Text.Json;
using FlowSec.Api.V1;

namespace FlowSec.Relay.Storage;

/// <summary>
/// One event table in one place: its name, the event types it holds, its columns (each with its
/// writer and reader) and its engine clause, so the DDL, the writer and the query cannot disagree.
/// </summary>
internal sealed class EventTable
{
    private readonly Func<Event> _newEvent;
    private readonly Func<IReadOnlyCollection<EventType>, string?> _typeFilter;

    /// <summary>Describes a table.</summary>
    /// <param name="name">Table name inside the FlowSec database.</param>
    /// <param name="types">Event types stored in this table.</param>
    /// <param name="columns">Columns in RowBinary row order.</param>
    /// <param name="engine">ENGINE, PARTITION BY and ORDER BY, and the sort key.</param>
    /// <param name="newEvent">
    /// An empty event with the parts this table's events always have (e.g. flows: source,
    /// destination, flow), which the column readers then fill.
    /// </param>
    /// <param name="typeFilter">
    /// For a table holding several types: the WHERE condition selecting only <c>requested</c>
    /// ones, or null when all of its types are requested.
    /// </param>
    public EventTable(string name, IReadOnlyList<EventType> types, IReadOnlyList<EventColumn> columns, TableEngine engine,
        Func<Event> newEvent, Func<IReadOnlyCollection<EventType>, string?>? typeFilter = null)
    {
        var duplicate = columns.GroupBy(c => c.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Table {name} declares column {duplicate.Key} twice.", nameof(columns));
        }

        Name = SqlLiteral.Identifier(name);
        Types = types;
        Columns = columns;
        ColumnNames = columns.Select(c => c.Name).ToArray();
        InsertColumnNames = [.. ColumnNames, BatchIdColumn];
        EngineClause = engine.Clause;
        SortKey = engine.SortKey;
        _newEvent = newEvent;
        _typeFilter = typeFilter ?? (_ => null);
    }

    /// <summary>Table name inside the FlowSec database.</summary>
    public string Name { get; }

    /// <summary>Event types stored in this table.</summary>
    public IReadOnlyList<EventType> Types { get; }

    /// <summary>Columns in RowBinary row order.</summary>
    public IReadOnlyList<EventColumn> Columns { get; }

    /// <summary>Column names in row order, for INSERT.</summary>
    public IReadOnlyList<string> ColumnNames { get; }

    /// <summary>ENGINE, PARTITION BY and ORDER BY.</summary>
    public string EngineClause { get; }

    /// <summary>The ORDER BY expressions of <see cref="EngineClause"/>, in order.</summary>
    public IReadOnlyList<string> SortKey { get; }

    /// <summary>
    /// The last column of every event table: the id of the sensor batch the row came in, so a relay
    /// can tell after a restart whether a re-sent batch is already stored. Not part of
    /// <see cref="Event"/>; 0 for rows inserted without it.
    /// </summary>
    public const string BatchIdColumn = "batch_id";

    /// <summary><see cref="ColumnNames"/> then <see cref="BatchIdColumn"/>: the row order of <see cref="WriteRow(RowBinaryWriter, Event, ulong)"/>.</summary>
    public IReadOnlyList<string> InsertColumnNames { get; }

    /// <summary>
    /// <c>CREATE TABLE IF NOT EXISTS</c> for the table in <paramref name="database"/>. Without
    /// <paramref name="lowCardinality"/> (18.x, where the type is experimental and made inserts of
    /// the flows table 2.5 times slower here) LowCardinality(String) columns are plain String;
    /// RowBinary is the same for both.
    /// </summary>
    public string CreateSql(string database, bool lowCardinality) =>
        $"CREATE TABLE IF NOT EXISTS {SqlLiteral.Identifier(database)}.{Name}\n(\n    " +
        string.Join(",\n    ", Columns.Select(c => $"`{c.Name}` {(lowCardinality ? c.Type : c.Type.Replace("LowCardinality(String)", "String", StringComparison.Ordinal))}")) +
        $",\n    `{BatchIdColumn}` UInt64\n)\n{EngineClause}";

    /// <summary>
    /// <c>ALTER TABLE … ADD COLUMN</c> for <paramref name="column"/> of this table, as <see cref="CreateSql"/>
    /// types it, for a migration that adds a column to tables created before it. 18.16 has no
    /// <c>IF NOT EXISTS</c> here: a second run fails with <see cref="DuplicateColumnCode"/>, which
    /// the migration treats as done.
    /// </summary>
    public string AddColumnSql(string column, string database, bool lowCardinality)
    {
        var c = Columns.Single(x => x.Name == column);
        string type = lowCardinality ? c.Type : c.Type.Replace("LowCardinality(String)", "String", StringComparison.Ordinal);
        return $"ALTER TABLE {SqlLiteral.Identifier(database)}.{Name} ADD COLUMN `{c.Name}` {type}";
    }

    /// <summary>ClickHouse's error code for a column that already exists (DUPLICATE_COLUMN).</summary>
    public const int DuplicateColumnCode = 44;

    /// <summary>The select list: FixedString addresses through hex(), since JSON cannot carry raw bytes.</summary>
    public string SelectList() =>
        string.Join(", ", Columns.Select(c => c.Type.StartsWith("FixedString", StringComparison.Ordinal) ? $"hex(`{c.Name}`) AS `{c.Name}`" : $"`{c.Name}`"));

    /// <summary>The condition selecting only the <paramref name="requested"/> types of this table, or null for all.</summary>
    public string? TypeFilter(IReadOnlyCollection<EventType> requested) => _typeFilter(requested);

    /// <summary>Appends one event as a row.</summary>
    public void WriteRow(RowBinaryWriter writer, Event e)
    {
        foreach (var column in Columns)
        {
            column.Write(writer, e);
        }
    }

    /// <summary>Appends one event as a row of <see cref="InsertColumnNames"/>, tagged with the batch it came in.</summary>
    public void WriteRow(RowBinaryWriter writer, Event e, ulong batchId)
    {
        WriteRow(writer, e);
        writer.WriteUInt64(batchId);
    }

    /// <summary>Rebuilds an event from a JSONEachRow row selected with <see cref="SelectList"/>.</summary>
    public Event ReadRow(JsonElement row)
    {
        var e = _newEvent();
        foreach (var column in Columns)
        {
            column.Read(e, row);
        }

        return e;
    }
}

/// <summary>Every event table, and which one holds each event type.</summary>
internal static class EventTables
{
    /// <summary>All tables, in the order ties in time are merged.</summary>
    public static IReadOnlyList<EventTable> All { get; } = [FlowTable.Table, DnsTable.Table, ProcessTable.Table, FileTable.Table, AlertTable.Table];

    private static readonly Dictionary<EventType, EventTable> ByType = All.SelectMany(t => t.Types.Select(type => (type, t)))
        .ToDictionary(x => x.type, x => x.t);

    /// <summary>Every event type some table stores.</summary>
    public static IReadOnlyList<EventType> StoredTypes { get; } = All.SelectMany(t => t.Types).ToArray();

    /// <summary>The table that stores <paramref name="type"/>, or null when none does.</summary>
    public static EventTable? For(EventType type) => ByType.GetValueOrDefault(type);
}
