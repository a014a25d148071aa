using System.Globalization;
using FlowSec.Api.V1;
using Microsoft.Extensions.Logging;

namespace FlowSec.Relay.Storage;

/// <summary>
/// What ClickHouse itself says about sensor batches, so de-duplication survives a relay restart:
/// every event row carries its <c>batch_id</c>, and <c>stored_batches</c> records each batch as
/// <c>inserting</c> before its rows are sent and <c>stored</c> after. A re-sent batch with no record
/// was never sent to ClickHouse (one indexed look-up); only one recorded as inserting but not
/// stored (the relay died in between) is looked for in the event tables. Only re-sent batches (and inserts whose outcome the writer does not know) are looked up;
/// fresh batches cost nothing here. Inserts carry a <c>query_id</c> naming this relay, so a re-sent
/// batch waits for inserts other relays (including a killed one) still have running in ClickHouse
/// before it is looked up, instead of being stored a second time.
/// </summary>
/// <remarks>
/// A re-sent batch with no record may still be held by the relay it was first sent to. If that copy
/// is still queued for storage there, the first relay withdraws it when the sensor's stream ends
/// (see <see cref="Ingest.IngestService"/>), so it is not stored there. The window left: a batch its
/// writer already took into a block whose flush has not recorded <c>inserting</c> yet — at most
/// about <see cref="ClickHouseOptions.FlushInterval"/> plus the time of one insert while ClickHouse
/// answers, longer while the first relay cannot reach ClickHouse (it then holds at most two blocks
/// unrecorded until it can). A copy re-sent to another relay within that window can be stored twice.
/// </remarks>
public sealed class StoredBatches
{
    /// <summary>Prefix of the <c>query_id</c> of every insert of event rows, followed by the relay's instance id.</summary>
    public const string InsertQueryIdPrefix = "flowsec-insert-";

    /// <summary>The table of batch outcomes.</summary>
    public const string TableName = "stored_batches";

    private static readonly TimeSpan RunningInsertTimeout = TimeSpan.FromSeconds(60);

    private readonly ClickHouseHttpClient _client;
    private readonly string _database;
    private readonly ILogger<StoredBatches> _log;
    private long _insertSequence;

    /// <summary>Creates the ledger over the database named in <paramref name="options"/>.</summary>
    public StoredBatches(ClickHouseHttpClient client, ClickHouseOptions options, ILogger<StoredBatches> log)
    {
        _client = client;
        _database = SqlLiteral.Identifier(options.Database);
        _log = log;
    }

    /// <summary>This relay process, as it appears in its inserts' query ids.</summary>
    public string InstanceId { get; } = Guid.NewGuid().ToString("N")[..16];

    /// <summary><c>CREATE TABLE IF NOT EXISTS</c> for <c>stored_batches</c> in <paramref name="database"/>.</summary>
    public static string CreateSql(string database) =>
        $"CREATE TABLE IF NOT EXISTS {SqlLiteral.Identifier(database)}.{TableName} " +
        "(node String, batch_id UInt64, state Enum8('stored' = 1, 'duplicate' = 2, 'inserting' = 3), events UInt32, time DateTime('UTC')) " +
        "ENGINE = MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (node, batch_id)";

    /// <summary>A new query id for one insert attempt of this relay.</summary>
    public string NextInsertQueryId() =>
        InsertQueryIdPrefix + InstanceId + "-" + Interlocked.Increment(ref _insertSequence).ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// The event tables that already hold rows of <paramref name="batch"/> (none for a batch never
    /// stored). Waits first for inserts of other relays that are running in ClickHouse now.
    /// </summary>
    /// <exception cref="ClickHouseException">ClickHouse is unreachable, or an insert of another relay kept running past a minute.</exception>
    internal async Task<IReadOnlySet<EventTable>> TablesHoldingAsync(EventBatch batch, CancellationToken cancellationToken)
    {
        var byTable = batch.Events.GroupBy(e => EventTables.For(e.Type)).Where(g => g.Key is not null).ToDictionary(g => g.Key!, g => g.ToList());
        if (byTable.Count == 0)
        {
            return new HashSet<EventTable>();
        }

        await WaitForRunningInsertsAsync(foreignOnly: true, null, cancellationToken);
        var node = SqlLiteral.String(batch.Node);
        var id = SqlLiteral.Integer(batch.BatchId);
        var states = (await _client.QueryTextAsync(
            $"SELECT DISTINCT state FROM {_database}.{TableName} WHERE node = {node} AND batch_id = {id} FORMAT TabSeparated", cancellationToken))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
        if (states.Contains("stored"))
        {
            return byTable.Keys.ToHashSet();
        }

        if (!states.Contains("inserting"))
        {
            return new HashSet<EventTable>(); // never sent to ClickHouse: "inserting" is recorded before any row is
        }

        // Sent, outcome unknown (the relay died between the insert and the record): ask each
        // table. The time bounds let ClickHouse prune partitions and sort-key ranges.
        var held = new HashSet<EventTable>();
        foreach (var (table, events) in byTable)
        {
            var from = events.Min(e => e.TimeUnixNano) / 1_000_000_000;
            var to = events.Max(e => e.TimeUnixNano) / 1_000_000_000;
            var count = await _client.QueryTextAsync(
                $"SELECT count() FROM {_database}.{table.Name} WHERE time >= toDateTime({SqlLiteral.Integer(from)}) " +
                $"AND time <= toDateTime({SqlLiteral.Integer(to)}) AND node = {node} AND `{EventTable.BatchIdColumn}` = {id}", cancellationToken);
            if (long.Parse(count.Trim(), CultureInfo.InvariantCulture) > 0)
            {
                held.Add(table);
            }
        }

        return held;
    }

    /// <summary>
    /// How many rows of <paramref name="table"/> carry one of <paramref name="batches"/>: after an
    /// insert whose outcome is unknown (connection lost, timeout), whether it went in. Waits first
    /// until the insert <paramref name="queryId"/> no longer runs.
    /// </summary>
    internal async Task<long> RowsOfAsync(EventTable table, IReadOnlyCollection<(string Node, ulong BatchId)> batches, string queryId, CancellationToken cancellationToken)
    {
        await WaitForRunningInsertsAsync(foreignOnly: false, queryId, cancellationToken);
        var tuples = string.Join(", ", batches.Select(b => $"({SqlLiteral.String(b.Node)}, {SqlLiteral.Integer(b.BatchId)})"));
        var count = await _client.QueryTextAsync(
            $"SELECT count() FROM {_database}.{table.Name} WHERE (node, `{EventTable.BatchIdColumn}`) IN ({tuples})", cancellationToken);
        return long.Parse(count.Trim(), CultureInfo.InvariantCulture);
    }

    /// <summary>Records <paramref name="batches"/> as <c>inserting</c>, <c>stored</c> or <c>duplicate</c>.</summary>
    public async Task RecordAsync(IReadOnlyCollection<(string Node, ulong BatchId, int Events)> batches, string state, CancellationToken cancellationToken)
    {
        if (batches.Count == 0)
        {
            return;
        }

        var rows = string.Join(", ", batches.Select(b =>
            $"({SqlLiteral.String(b.Node)}, {SqlLiteral.Integer(b.BatchId)}, {SqlLiteral.String(state)}, {SqlLiteral.Integer((long)b.Events)}, now())"));
        await _client.ExecuteAsync($"INSERT INTO {_database}.{TableName} (node, batch_id, state, events, time) VALUES {rows}", null, cancellationToken);
    }

    // Polls system.processes until the inserts running now (of other relays, or the one query id)
    // have ended; inserts that start meanwhile are not waited for.
    private async Task WaitForRunningInsertsAsync(bool foreignOnly, string? queryId, CancellationToken cancellationToken)
    {
        var condition = queryId is not null
            ? $"query_id = {SqlLiteral.String(queryId)}"
            : $"query_id LIKE {SqlLiteral.String(InsertQueryIdPrefix + "%")}" +
              (foreignOnly ? $" AND query_id NOT LIKE {SqlLiteral.String(InsertQueryIdPrefix + InstanceId + "-%")}" : "");
        var sql = $"SELECT query_id FROM system.processes WHERE {condition}";
        HashSet<string>? waitingFor = null;
        var started = DateTime.UtcNow;
        while (true)
        {
            var running = (await _client.QueryTextAsync(sql, cancellationToken)).Split('\n', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
            waitingFor = waitingFor is null ? running : [.. waitingFor.Intersect(running)];
            if (waitingFor.Count == 0)
            {
                return;
            }

            if (DateTime.UtcNow - started > RunningInsertTimeout)
            {
                throw new ClickHouseException($"inserts still running in ClickHouse after {RunningInsertTimeout.TotalSeconds:0} s: {string.Join(", ", waitingFor)}");
            }

            if (DateTime.UtcNow - started < TimeSpan.FromMilliseconds(40))
            {
                _log.LogInformation("Waiting for {Count} running insert(s) before checking a re-sent batch: {Ids}", waitingFor.Count, string.Join(", ", waitingFor));
            }

            await Task.Delay(50, cancellationToken);
        }
    }
}
