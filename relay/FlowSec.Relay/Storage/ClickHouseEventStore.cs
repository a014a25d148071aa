using System.Runtime.CompilerServices;
using FlowSec.Api.V1;

namespace FlowSec.Relay.Storage;

/// <summary>Reads stored events back out of ClickHouse as <see cref="Event"/>s, every type from its own table.</summary>
public sealed class ClickHouseEventStore
{
    private readonly ClickHouseHttpClient _client;
    private readonly string _database;

    /// <summary>Creates the store over the database named in <paramref name="options"/>.</summary>
    public ClickHouseEventStore(ClickHouseHttpClient client, ClickHouseOptions options)
    {
        _client = client;
        _database = SqlLiteral.Identifier(options.Database);
    }

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

        // Validated here, not at the first MoveNextAsync, so bad windows fail at the call.
        var where = TimeWindow(query);
        var tables = EventTables.All.Where(t => t.Types.Any(requested.Contains)).ToArray();
        var sql = tables.Select(t => Select(t, where, t.TypeFilter(requested))).ToArray();
        return query.Limit is { } limit
            ? NewestAsync(tables, sql, limit, cancellationToken)
            : MergeAsync(tables, sql, cancellationToken);
    }

    // Each table's newest `limit` rows (DESC LIMIT), then the newest `limit` of those, oldest first.
    private async IAsyncEnumerable<Event> NewestAsync(EventTable[] tables, string[] sql, int limit, [EnumeratorCancellation] CancellationToken ct)
    {
        var perTable = await Task.WhenAll(tables.Select(async (table, i) =>
        {
            var rows = new List<(Event Event, int Table)>();
            await foreach (var row in _client.QueryJsonEachRowAsync(sql[i] + " ORDER BY time_ns DESC LIMIT " + SqlLiteral.Integer((long)limit), ct))
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

    private string Select(EventTable table, IReadOnlyList<string> window, string? typeFilter)
    {
        var where = typeFilter is null ? window : [.. window, typeFilter];
        return $"SELECT {table.SelectList()} FROM {_database}.{table.Name}" + (where.Count > 0 ? " WHERE " + string.Join(" AND ", where) : "");
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
