using System.Runtime.CompilerServices;
using FlowSec.Api.Filters;
using FlowSec.Api.V1;

namespace FlowSec.Relay.Storage;

/// <summary>Reads stored events back out of ClickHouse as <see cref="Event"/>s, every type from its own table.</summary>
public sealed class ClickHouseEventStore
{
    private readonly ClickHouseHttpClient _client;
    private readonly string _database;
    private readonly bool _useSummaries;
    private int _summaryQueries;
    private int _portCountLookups;

    /// <summary>Creates the store over the database named in <paramref name="options"/>.</summary>
    public ClickHouseEventStore(ClickHouseHttpClient client, ClickHouseOptions options)
    {
        _client = client;
        _database = SqlLiteral.Identifier(options.Database);
        _useSummaries = options.UseFlowSummaries;
    }

    /// <summary>Aggregates answered (in part) from a flow summary since start; for tests and diagnostics.</summary>
    internal int SummaryQueries => Volatile.Read(ref _summaryQueries);

    /// <summary>"Newest N" flow queries that found where to start from the per-minute port counts since start; for tests and diagnostics.</summary>
    internal int PortCountLookups => Volatile.Read(ref _portCountLookups);

    /// <summary>Every event type that is stored (and so can be queried).</summary>
    public static IReadOnlyList<EventType> StoredTypes => EventTables.StoredTypes;

    /// <summary>The newest flows in the window, returned oldest first (newest last).</summary>
    public Task<IReadOnlyList<Event>> QueryFlowsAsync(EventQuery query, CancellationToken cancellationToken = default) =>
        QueryAsync(query, [EventType.Flow], cancellationToken);

    /// <summary>
    /// Events of the requested types in the window, merged across tables and ordered by time; with
    /// <see cref="EventQuery.Limit"/>, the newest that many of all types together. Oldest first.
    /// </summary>
    /// <param name="query">Window and limit.</param>
    /// <param name="types">Types to return; null or empty = every stored type.</param>
    /// <param name="cancellationToken">Cancels the queries.</param>
    /// <exception cref="ArgumentException">A requested type is not stored (see <see cref="StoredTypes"/>).</exception>
    public async Task<IReadOnlyList<Event>> QueryAsync(EventQuery query, IReadOnlyCollection<EventType>? types = null, CancellationToken cancellationToken = default)
    {
        var events = new List<Event>();
        await foreach (var e in StreamAsync(query, types, cancellationToken))
        {
            events.Add(e);
        }

        return events;
    }

    /// <summary>
    /// <see cref="QueryAsync"/> as a stream. Without a limit, each table is read in time order and
    /// the streams are merged as they arrive, so the relay holds a few rows per table however large
    /// the window; with a limit, at most that many rows per table are held.
    /// </summary>
    /// <inheritdoc cref="QueryAsync" path="/param"/>
    /// <exception cref="ArgumentException">A requested type is not stored (see <see cref="StoredTypes"/>).</exception>
    public IAsyncEnumerable<Event> StreamAsync(EventQuery query, IReadOnlyCollection<EventType>? types = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Limit is <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(query), query.Limit, "Limit must be positive.");
        }

        IReadOnlyCollection<EventType> requested = types is null || types.Count == 0 ? EventTables.StoredTypes : types;
        foreach (var type in requested)
        {
            if (EventTables.For(type) is null)
            {
                throw new ArgumentException($"Events of type {type} are not stored.", nameof(types));
            }
        }

        // Validated here, not at the first MoveNextAsync, so bad windows fail at the call. A table
        // the filters rule out entirely is not queried at all.
        var window = TimeWindow(query);
        var selected = EventTables.All.Where(t => t.Types.Any(requested.Contains))
            .Select(t => (Table: t, Where: Where(t, window, t.TypeFilter(requested), query.Filter), Lookup: NewestLookup(t, t.TypeFilter(requested), query)))
            .Where(x => x.Where != EventFilterSql.False)
            .ToArray();
        var tables = selected.Select(x => x.Table).ToArray();
        var sql = selected.Select(x => Select(x.Table, x.Where)).ToArray();
        return query.Limit is { } limit
            ? NewestAsync(tables, selected.Select(x => x.Where).ToArray(), selected.Select(x => x.Lookup).ToArray(), limit, cancellationToken)
            : MergeAsync(tables, sql, cancellationToken);
    }

    // For flows filtered on the destination port and nothing else the per-minute port counts lack,
    // the SQL that finds, from those counts, the minute from which on the window holds at least
    // `limit` matches (see NewestAsync); null when the counts cannot serve.
    private string? NewestLookup(EventTable table, string? typeFilter, EventQuery window)
    {
        if (!_useSummaries || table != FlowTable.Table || typeFilter is not null || window.Filter is not { } filter || window.Limit is not { } n)
        {
            return null;
        }
        var counts = FlowSummary.DestinationPortMinutes;
        var condition = EventFilterSql.Where(table, filter);
        var columns = FlowSummary.ColumnsOf(condition);
        if (columns is null || !columns.Contains("dst_port") || !counts.Covers(columns))
        {
            return null;
        }

        // Every minute the window touches is read (for the total); only whole minutes inside it count
        // towards the limit, since a ragged end minute's count includes flows outside the window.
        var minute = $"`{counts.BucketColumn}`";
        var touched = EventFilterSql.And(
        [
            window.Since is { } since ? $"{minute} >= toDateTime({SqlLiteral.Integer(FlowSummary.MinuteFloorSeconds(since))})" : EventFilterSql.True,
            window.Until is { } until ? $"{minute} < toDateTime({SqlLiteral.Integer(FlowSummary.MinuteCeilingSeconds(until))})" : EventFilterSql.True,
            condition,
        ]);
        var whole = EventFilterSql.And(
        [
            window.Since is { } a ? $"m >= {SqlLiteral.Integer(FlowSummary.MinuteCeilingSeconds(a))}" : EventFilterSql.True,
            window.Until is { } b ? $"m < {SqlLiteral.Integer(FlowSummary.MinuteFloorSeconds(b))}" : EventFilterSql.True,
        ]);
        // Minutes newest first with the running sum of their whole-minute counts; the first minute
        // where that sum reaches the limit (0 when it never does: then the whole window is read).
        var sorted = "arrayReverseSort(groupArray((m, c, w)))";
        return $"SELECT sum(c), arrayFirst((m, s) -> s >= {SqlLiteral.Integer((long)n)}, arrayMap(x -> tupleElement(x, 1), {sorted}), " +
               $"arrayCumSum(arrayMap(x -> tupleElement(x, 3), {sorted}))) " +
               $"FROM (SELECT m, c, if({whole}, c, 0) AS w FROM (SELECT toUInt32({minute}) AS m, sum(`flows`) AS c FROM {_database}.{counts.Name} WHERE {touched} GROUP BY m)) " +
               "FORMAT TabSeparated";
    }

    // Each table's newest `limit` rows (DESC LIMIT), then the newest `limit` of those, oldest first.
    // Per table, first where the newest `limit` matches start: the time of the limit-th newest,
    // read from time_ns and the filtered columns only, or (with a lookup, see NewestLookup) the
    // minute from which on the port counts hold `limit` matches. Then whole rows from that time on,
    // which the day partitions and the sort key's hour bucket narrow to the newest hours instead of
    // every matching row of the window.
    private async IAsyncEnumerable<Event> NewestAsync(EventTable[] tables, string[] where, string?[] lookup, int limit, [EnumeratorCancellation] CancellationToken ct)
    {
        var perTable = await Task.WhenAll(tables.Select(async (table, i) =>
        {
            var rows = new List<(Event Event, int Table)>();
            string newest;
            if (lookup[i] is { } minutesSql)
            {
                Interlocked.Increment(ref _portCountLookups);
                var found = (await _client.QueryTextAsync(minutesSql, ct)).Trim().Split('\t');
                if (found[0] == "0")
                {
                    return rows;
                }
                var fromSecond = long.Parse(found[1], System.Globalization.CultureInfo.InvariantCulture);
                newest = fromSecond == 0 ? where[i] : EventFilterSql.And([where[i], $"time >= {SqlLiteral.DateTime(DateTimeOffset.FromUnixTimeSeconds(fromSecond))}"]);
            }
            else
            {
                var from = (await _client.QueryTextAsync(
                    $"SELECT count(), min(time_ns) FROM (SELECT time_ns FROM {_database}.{table.Name}{WhereClause(where[i])} ORDER BY time_ns DESC LIMIT {SqlLiteral.Integer((long)limit)}) FORMAT TabSeparated",
                    ct)).Trim().Split('\t');
                if (from[0] == "0")
                {
                    return rows;
                }

                var oldest = ulong.Parse(from[1], System.Globalization.CultureInfo.InvariantCulture);
                newest = EventFilterSql.And([where[i], $"time >= {SqlLiteral.DateTime(DateTimeOffset.FromUnixTimeSeconds((long)(oldest / 1_000_000_000)))}", $"time_ns >= {SqlLiteral.Integer(oldest)}"]);
            }
            await foreach (var row in _client.QueryJsonEachRowAsync(Select(table, newest) + " ORDER BY time_ns DESC LIMIT " + SqlLiteral.Integer((long)limit), ct))
            {
                rows.Add((table.ReadRow(row), i));
            }

            rows.Reverse();
            return rows;
        }));

        // Stable sort on time: ties keep table order, and within a table the server's order.
        foreach (var (e, _) in perTable.SelectMany(r => r).OrderBy(r => r.Event.TimeUnixNano).ThenBy(r => r.Table).TakeLast(limit))
        {
            yield return e;
        }
    }

    // Every table in time order (ASC), merged: always yield the oldest head, ties in table order.
    private async IAsyncEnumerable<Event> MergeAsync(EventTable[] tables, string[] sql, [EnumeratorCancellation] CancellationToken ct)
    {
        var streams = new IAsyncEnumerator<System.Text.Json.JsonElement>[tables.Length];
        try
        {
            for (var i = 0; i < tables.Length; i++)
            {
                streams[i] = _client.QueryJsonEachRowAsync(sql[i] + " ORDER BY time_ns", ct).GetAsyncEnumerator(ct);
            }

            // The queries run on the server together; the first rows of each are awaited together.
            var started = await Task.WhenAll(streams.Select(s => s.MoveNextAsync().AsTask()));
            var heads = new PriorityQueue<(Event Event, int Table), (ulong Time, int Table)>();
            for (var i = 0; i < tables.Length; i++)
            {
                if (started[i])
                {
                    Enqueue(i);
                }
            }

            while (heads.TryDequeue(out var head, out _))
            {
                yield return head.Event;
                if (await streams[head.Table].MoveNextAsync())
                {
                    Enqueue(head.Table);
                }
            }

            void Enqueue(int i)
            {
                var e = tables[i].ReadRow(streams[i].Current);
                heads.Enqueue((e, i), (e.TimeUnixNano, i));
            }
        }
        finally
        {
            foreach (var stream in streams)
            {
                if (stream is not null)
                {
                    await stream.DisposeAsync();
                }
            }
        }
    }

    // The filters run in an inner query: the select list turns FixedString addresses into hex under
    // their own names, and 18.16 resolves a WHERE on `src_ip` to such an alias, not to the column.
    private string Select(EventTable table, string where) =>
        $"SELECT {table.SelectList()} FROM (SELECT * FROM {_database}.{table.Name}{WhereClause(where)})";

    private static string WhereClause(string where) => where == EventFilterSql.True ? "" : " WHERE " + where;

    private static string Where(EventTable table, IReadOnlyList<string> window, string? typeFilter, EventFilterMatcher? filter) =>
        EventFilterSql.And([.. window, typeFilter ?? EventFilterSql.True, filter is null ? EventFilterSql.True : EventFilterSql.Where(table, filter)]);

    /// <summary>
    /// Counts and bytes per group of <see cref="AggregateQuery.GroupBy"/> over the stored events of
    /// <paramref name="types"/>, which must all live in one table; the <see cref="AggregateQuery.Top"/>
    /// largest groups, largest first (ties in key order).
    /// </summary>
    /// <exception cref="ArgumentException">Types span tables or are not stored, a field does not apply to the table, or Top is out of range.</exception>
    public async Task<IReadOnlyList<AggregateGroupRow>> AggregateAsync(AggregateQuery query, IReadOnlyCollection<EventType> types, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        IReadOnlyCollection<EventType> requested = types.Count == 0 ? [EventType.Flow] : types;
        var tables = requested.Select(t => EventTables.For(t) ?? throw new ArgumentException($"Events of type {t} are not stored.", nameof(types)))
            .Distinct().ToArray();
        if (tables.Length != 1)
        {
            throw new ArgumentException("group-by works on one kind of event at a time (flows, dns, process, file or alerts)", nameof(types));
        }
        if (query.GroupBy.Count == 0 || query.Top is < 1 or > AggregateQuery.MaxTop)
        {
            throw new ArgumentException($"group-by needs at least one field and top between 1 and {AggregateQuery.MaxTop}", nameof(query));
        }
        var table = tables[0];
        var invalid = query.GroupBy.FirstOrDefault(f => !f.AppliesTo(table));
        if (invalid is not null)
        {
            throw new ArgumentException($"group-by field '{invalid.Name}' does not apply to {table.Name}; fields that do: " +
                string.Join(", ", GroupByField.All.Where(g => g.AppliesTo(table)).Select(g => g.Name)));
        }
        var typeFilter = table.TypeFilter(requested);
        var filter = query.Window.Filter is null ? EventFilterSql.True : EventFilterSql.Where(table, query.Window.Filter);
        var where = EventFilterSql.And([.. TimeWindow(query.Window), typeFilter ?? EventFilterSql.True, filter]);
        if (where == EventFilterSql.False)
        {
            return [];
        }
        var grouped = query.GroupBy.SelectMany(f => f.Columns(table)).Distinct().ToArray();
        var columns = grouped.Select(c => $"`{c}`").ToArray();
        var names = query.GroupBy.Select((_, i) => "g" + i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();

        // Whole hours of the window come from an hourly summary when one holds every grouped and
        // filtered column, the ends of the window from the raw rows; both give per-group counts
        // and byte sums, which the outer query adds up per group as it would for the raw rows alone.
        var parts = new List<string>();
        var plan = _useSummaries && table == FlowTable.Table && typeFilter is null ? SummaryPlan(query.Window, grouped, filter) : null;
        var rawWhere = plan is null ? where : EventFilterSql.And([where, plan.Value.RawRest]);
        if (rawWhere != EventFilterSql.False)
        {
            parts.Add(RawGroups(table, columns, rawWhere));
        }
        if (plan is { } p)
        {
            Interlocked.Increment(ref _summaryQueries);
            parts.Add($"SELECT {string.Join("", columns.Select(c => c + ", "))}{FlowSummary.SumOf("n")} AS n, {FlowSummary.SumOf("sent")} AS sent, {FlowSummary.SumOf("received")} AS received " +
                      $"FROM {_database}.{p.Summary.Name} WHERE {p.SummaryWhere}" + (columns.Length > 0 ? $" GROUP BY {string.Join(", ", columns)}" : ""));
        }
        var sql = $"SELECT {string.Join(", ", query.GroupBy.Select((f, i) => $"{f.Text(table)} AS {names[i]}"))}, " +
                  "sum(n) AS group_count, sum(sent) AS group_bytes_sent, sum(received) AS group_bytes_received " +
                  $"FROM ({string.Join(" UNION ALL ", parts)}) GROUP BY {string.Join(", ", names)} " +
                  $"ORDER BY {(query.SortByBytes ? "group_bytes_sent + group_bytes_received DESC, group_count DESC" : "group_count DESC, group_bytes_sent + group_bytes_received DESC")}, {string.Join(", ", names)}" +
                  $" LIMIT {SqlLiteral.Integer((long)query.Top)}";
        var rows = new List<AggregateGroupRow>();
        await foreach (var row in _client.QueryJsonEachRowAsync(sql, cancellationToken))
        {
            rows.Add(new AggregateGroupRow(names.Select(n => row.GetProperty(n).GetString()!).ToArray(),
                EventColumns.UInt64(row.GetProperty("group_count")), EventColumns.UInt64(row.GetProperty("group_bytes_sent")), EventColumns.UInt64(row.GetProperty("group_bytes_received"))));
        }
        return rows;
    }

    // Per group of the stored columns: their values, event count and byte sums, from the raw rows.
    // Grouped on the stored columns, and only the groups turned into text (by the caller): a concat
    // or address formatting per group instead of per row. The rows are grouped by one 64-bit hash of
    // those columns (any() keeps their values): hashing two strings per row is several times cheaper
    // than a hash table keyed by the strings themselves, and two groups would have to collide in 64
    // bits to be merged. Aliases k0.. name no column, so WHERE sees the columns.
    private string RawGroups(EventTable table, string[] columns, string where)
    {
        var bytes = table.ColumnNames.Contains("bytes_sent") ? ("sum(`bytes_sent`)", "sum(`bytes_received`)") : ("toUInt64(0)", "toUInt64(0)");
        var held = columns.Select((c, i) => (Column: c, Alias: "k" + i.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToArray();
        var inner = $"SELECT {string.Join("", held.Select(h => $"any({h.Column}) AS {h.Alias}, "))}count() AS n, {bytes.Item1} AS sent, {bytes.Item2} AS received " +
                    $"FROM {_database}.{table.Name}{WhereClause(where)}" + (columns.Length > 0 ? $" GROUP BY cityHash64({string.Join(", ", columns)})" : "");
        return $"SELECT {string.Join("", held.Select(h => $"{h.Alias} AS {h.Column}, "))}n, sent, received FROM ({inner})";
    }

    /// <summary>
    /// How an aggregate over flows can use a summary: the smallest one holding every grouped and
    /// filtered column, the condition on its hour buckets (the window's whole hours) and filters,
    /// and the condition selecting the raw rows outside those hours (<see cref="EventFilterSql.False"/>
    /// when there are none). Null when no summary serves, the filter names a column in a way that
    /// cannot be checked, or the window holds no whole hour. Exact because <c>time</c> is the
    /// second of <c>time_ns</c> (the writer stores both from one value), so a row is in a whole hour
    /// of the window by its <c>time</c> exactly when the window's nanosecond bounds hold it.
    /// </summary>
    private static (FlowSummary Summary, string SummaryWhere, string RawRest)? SummaryPlan(EventQuery window, string[] grouped, string filter)
    {
        var filtered = FlowSummary.ColumnsOf(filter);
        if (filtered is null || FlowSummary.SummaryFor(grouped.Concat(filtered)) is not { } summary)
        {
            return null;
        }
        var first = window.Since is { } since ? FlowSummary.HourCeiling(since) : (DateTimeOffset?)null;
        var end = window.Until is { } until ? FlowSummary.HourFloor(until) : (DateTimeOffset?)null;
        if ((first is { } f && (f >= end || f > SqlLiteral.MaxDateTime)) || end < SqlLiteral.MinDateTime)
        {
            return null;
        }
        var hours = EventFilterSql.And(
        [
            first is { } a ? $"hour >= {SqlLiteral.DateTime(a)}" : EventFilterSql.True,
            end is { } b ? $"hour < {SqlLiteral.DateTime(b)}" : EventFilterSql.True,
        ]);
        var rest = EventFilterSql.Or(
        [
            first is { } c ? $"time < {SqlLiteral.DateTime(c)}" : EventFilterSql.False,
            end is { } d ? $"time >= {SqlLiteral.DateTime(d)}" : EventFilterSql.False,
        ]);
        return (summary, EventFilterSql.And([hours, filter]), rest);
    }

    // Bounds go on both columns: `time` lets the server prune partitions and sort-key ranges,
    // `time_ns` makes the window exact to the nanosecond.
    private static List<string> TimeWindow(EventQuery query)
    {
        var where = new List<string>();
        if (query.Since is { } since)
        {
            where.Add($"time >= {SqlLiteral.DateTime(since)}");
            where.Add($"time_ns >= {SqlLiteral.Integer(UnixNanos(since))}");
        }

        if (query.Until is { } until)
        {
            where.Add($"time <= {SqlLiteral.DateTime(until)}");
            where.Add($"time_ns < {SqlLiteral.Integer(UnixNanos(until))}");
        }

        return where;
    }

    private static ulong UnixNanos(DateTimeOffset t)
    {
        if (t < DateTimeOffset.UnixEpoch)
        {
            throw new ArgumentOutOfRangeException(nameof(t), t, "Times before 1970 cannot be queried.");
        }

        return (ulong)(t - DateTimeOffset.UnixEpoch).Ticks * 100;
    }
}
