using FlowSec.Api.V1;

namespace FlowSec.Relay.Storage;

/// <summary>Reads stored flows back out of ClickHouse as <see cref="Event"/>s.</summary>
public sealed class ClickHouseEventStore
{
    private readonly ClickHouseHttpClient _client;
    private readonly string _table;

    /// <summary>Creates the store over the database named in <paramref name="options"/>.</summary>
    public ClickHouseEventStore(ClickHouseHttpClient client, ClickHouseOptions options)
    {
        _client = client;
        _table = SqlLiteral.Identifier(options.Database) + "." + FlowTable.Name;
    }

    /// <summary>The newest flows in the window, returned oldest first (newest last).</summary>
    public async Task<IReadOnlyList<Event>> QueryFlowsAsync(EventQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Limit is <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(query), query.Limit, "Limit must be positive.");
        }

        // Bounds go on both columns: `time` lets the server prune partitions and sort-key ranges,
        // `time_ns` makes the window exact to the nanosecond.
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

        var sql = $"SELECT {FlowTable.SelectList()} FROM {_table}" +
                  (where.Count > 0 ? " WHERE " + string.Join(" AND ", where) : "") +
                  " ORDER BY time_ns DESC" +
                  (query.Limit is { } limit ? $" LIMIT {SqlLiteral.Integer((long)limit)}" : "");

        var events = new List<Event>();
        await foreach (var row in _client.QueryJsonEachRowAsync(sql, cancellationToken))
        {
            events.Add(FlowTable.ReadRow(row));
        }

        events.Reverse();
        return events;
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
