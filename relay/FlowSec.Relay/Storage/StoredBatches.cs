using System.Globalization;
using System.Text.Json;
using FlowSec.Api.V1;
using Microsoft.Extensions.Logging;

namespace FlowSec.Relay.Storage;

/// <summary>
/// What ClickHouse itself says about sensor batches, so de-duplication survives a relay restart:
/// every event row carries its <c>batch_id</c>, and <c>stored_batches</c> records each batch as
/// <c>inserting</c> before its rows are sent and <c>stored</c> after. A re-sent batch with no record
/// was never sent to ClickHouse (one indexed look-up); only one recorded as inserting but not
/// stored (the relay died in between, or is still trying) is looked for in the event tables. Only
/// re-sent batches (and inserts whose outcome the writer does not know) are looked up; fresh
/// batches cost one query per insert attempt (the claims, below). Inserts carry a <c>query_id</c>
/// naming this relay, so a re-sent batch waits for inserts other relays (including a killed one)
/// still have running in ClickHouse before it is looked up, instead of being stored a second time.
/// </summary>
/// <remarks>
/// <para>
/// A re-sent batch may still be held by the relay it was first sent to: queued (that relay
/// withdraws it when the sensor's stream ends, see <see cref="Ingest.IngestService"/>), or already
/// taken into a block of its writer, whose flush may not have recorded it as <c>inserting</c> yet,
/// or whose insert failed and is being retried. Claims close that window. The relay that receives a
/// re-sent copy first records a claim in <c>claimed_batches</c> (node, batch id, its instance, the
/// time), and only then reads the ledger. A writer, before every insert attempt (the first and each
/// retry) and after its <c>inserting</c> record is acknowledged, reads the claims of its block's
/// batches and takes out the rows of every batch whose latest claim is another relay's (for a fresh
/// copy: any claim), without acking them (<see cref="ClickHouseFlowWriter.BatchesAbandoned"/>).
/// Each side writes first and reads second, so with one ClickHouse (an insert is visible once
/// acknowledged) at least one side sees the other: either the writer sees the claim and drops the
/// batch, or the claimant sees <c>inserting</c>. In the second case the writer's attempt may have
/// passed its look at the claims without its insert showing in <c>system.processes</c> yet, so the
/// claimant waits <see cref="ClickHouseOptions.ClaimMargin"/> from its claim on, then waits for
/// running inserts and looks for the rows; any later attempt of that writer sees the claim.
/// </para>
/// <para>
/// Residual risk: a writer that stalls longer than the margin between reading the claims and its
/// insert reaching ClickHouse (a pause of seconds), or a ClickHouse cluster whose replicas do not
/// show an acknowledged insert to the next read, can still store a batch twice. Claims are ordered
/// by the relays' clocks: clocks far apart can make a claimant drop its own copy (the sensor then
/// re-sends it once more), never keep two.
/// </para>
/// </remarks>
public sealed class StoredBatches
{
    /// <summary>Prefix of the <c>query_id</c> of every insert of event rows, followed by the relay's instance id.</summary>
    public const string InsertQueryIdPrefix = "flowsec-insert-";

    /// <summary>The table of batch outcomes.</summary>
    public const string TableName = "stored_batches";

    /// <summary>The table of claims on re-sent batches, by the relay that received them.</summary>
    public const string ClaimsTableName = "claimed_batches";

    private static readonly TimeSpan RunningInsertTimeout = TimeSpan.FromSeconds(60);

    /// <summary>How long claims are gathered into one INSERT (see <see cref="ClaimAsync"/>).</summary>
    internal static readonly TimeSpan ClaimGathering = TimeSpan.FromMilliseconds(50);

    private readonly Lock _claimsLock = new();
    private readonly List<PendingClaim> _pendingClaims = [];

    private readonly ClickHouseHttpClient _client;
    private readonly string _database;
    private readonly ILogger<StoredBatches> _log;
    private readonly TimeSpan _claimMargin;
    private readonly TimeProvider _time;
    private long _insertSequence;

    /// <summary>Creates the ledger over the database named in <paramref name="options"/>.</summary>
    public StoredBatches(ClickHouseHttpClient client, ClickHouseOptions options, ILogger<StoredBatches> log)
        : this(client, options, log, TimeProvider.System)
    {
    }

    /// <summary>Creates the ledger with the clock <paramref name="time"/> (claims' times, the claim margin).</summary>
    internal StoredBatches(ClickHouseHttpClient client, ClickHouseOptions options, ILogger<StoredBatches> log, TimeProvider time)
    {
        _client = client;
        _database = SqlLiteral.Identifier(options.Database);
        _log = log;
        _claimMargin = options.ClaimMargin;
        _time = time;
    }

    /// <summary>This relay process, as it appears in its inserts' query ids.</summary>
    public string InstanceId { get; } = Guid.NewGuid().ToString("N")[..16];

    /// <summary><c>CREATE TABLE IF NOT EXISTS</c> for <c>stored_batches</c> in <paramref name="database"/>.</summary>
    public static string CreateSql(string database) =>
        $"CREATE TABLE IF NOT EXISTS {SqlLiteral.Identifier(database)}.{TableName} " +
        "(node String, batch_id UInt64, state Enum8('stored' = 1, 'duplicate' = 2, 'inserting' = 3), events UInt32, time DateTime('UTC')) " +
        "ENGINE = MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (node, batch_id)";

    /// <summary><c>CREATE TABLE IF NOT EXISTS</c> for <c>claimed_batches</c> in <paramref name="database"/>.</summary>
    public static string CreateClaimsSql(string database) =>
        $"CREATE TABLE IF NOT EXISTS {SqlLiteral.Identifier(database)}.{ClaimsTableName} " +
        "(node String, batch_id UInt64, relay String, claimed_at UInt64, time DateTime('UTC')) " +
        "ENGINE = MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (node, batch_id)";

    /// <summary>A new query id for one insert attempt of this relay.</summary>
    public string NextInsertQueryId() =>
        InsertQueryIdPrefix + InstanceId + "-" + Interlocked.Increment(ref _insertSequence).ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// Claims the re-sent <paramref name="batch"/> for this relay (so no other relay's writer stores
    /// its copy from now on), then returns the event tables that already hold rows of it (none for a
    /// batch never stored). Waits first for inserts of other relays that are running in ClickHouse now.
    /// </summary>
    /// <exception cref="ClickHouseException">ClickHouse is unreachable, or an insert of another relay kept running past a minute.</exception>
    internal async Task<IReadOnlySet<EventTable>> TablesHoldingAsync(EventBatch batch, CancellationToken cancellationToken)
    {
        var byTable = batch.Events.GroupBy(e => EventTables.For(e.Type)).Where(g => g.Key is not null).ToDictionary(g => g.Key!, g => g.ToList());
        if (byTable.Count == 0)
        {
            return new HashSet<EventTable>();
        }

        // The claim first, the ledger second: see the remarks.
        await ClaimAsync(batch.Node, batch.BatchId, cancellationToken);
        var claimed = _time.GetTimestamp();
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

        // Sent, outcome unknown (the relay died between the insert and the record, or is between
        // attempts): an attempt that read the claims before ours was written shows in
        // system.processes within the margin; later ones see our claim and leave the batch out.
        var wait = _claimMargin - _time.GetElapsedTime(claimed);
        if (wait > TimeSpan.Zero)
        {
            await Task.Delay(wait, _time, cancellationToken);
            await WaitForRunningInsertsAsync(foreignOnly: true, null, cancellationToken);
        }

        // Then ask each table. The time bounds let ClickHouse prune partitions and sort-key ranges.
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

    /// <summary>Records this relay's claim on a re-sent batch it received (see the remarks).</summary>
    /// <remarks>
    /// Claims made within <see cref="ClaimGathering"/> of each other go in one INSERT: a spool replay
    /// re-sends thousands of batches, and one insert (one part for ClickHouse to merge) for each would
    /// be far more than the one a second MergeTree tables are written at. The task completes once
    /// ClickHouse acknowledged the insert, i.e. once the claim is visible.
    /// </remarks>
    /// <exception cref="ClickHouseException">ClickHouse refused the claims or is unreachable.</exception>
    internal Task ClaimAsync(string node, ulong batchId, CancellationToken cancellationToken)
    {
        var claim = new PendingClaim(node, batchId, (_time.GetUtcNow() - DateTimeOffset.UnixEpoch).Ticks * 100);
        bool first;
        lock (_claimsLock)
        {
            first = _pendingClaims.Count == 0;
            _pendingClaims.Add(claim);
        }

        if (first)
        {
            _ = WriteClaimsAsync();
        }

        return claim.Written.Task.WaitAsync(cancellationToken);
    }

    // Not cancelled by one look-up's stream ending: the others in the same insert wait for it (the
    // HTTP client's request timeout bounds it).
    private async Task WriteClaimsAsync()
    {
        await Task.Delay(ClaimGathering);
        List<PendingClaim> claims;
        lock (_claimsLock)
        {
            claims = [.. _pendingClaims];
            _pendingClaims.Clear();
        }

        try
        {
            var rows = string.Join(", ", claims.Select(c =>
                $"({SqlLiteral.String(c.Node)}, {SqlLiteral.Integer(c.BatchId)}, {SqlLiteral.String(InstanceId)}, {SqlLiteral.Integer(c.At)}, now())"));
            await _client.ExecuteAsync($"INSERT INTO {_database}.{ClaimsTableName} (node, batch_id, relay, claimed_at, time) VALUES {rows}", null, CancellationToken.None);
            claims.ForEach(c => c.Written.TrySetResult());
        }
        catch (Exception e)
        {
            claims.ForEach(c => c.Written.TrySetException(e as ClickHouseException ?? new ClickHouseException("could not record claims: " + e.Message, inner: e)));
        }
    }

    private sealed record PendingClaim(string Node, ulong BatchId, long At)
    {
        public TaskCompletionSource Written { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>
    /// Which of <paramref name="batches"/> (held by this relay's writer) another relay has claimed
    /// since: their latest claim is not this relay's. Read before every insert attempt.
    /// </summary>
    internal async Task<IReadOnlySet<(string Node, ulong BatchId)>> ClaimedElsewhereAsync(IReadOnlyCollection<(string Node, ulong BatchId)> batches, CancellationToken cancellationToken)
    {
        if (batches.Count == 0)
        {
            return new HashSet<(string, ulong)>();
        }

        // One id range per node, not every id: a block can hold thousands of batches, and a range per
        // node is a short statement over the (node, batch_id) sort key. Claims are few; the exact set is picked here.
        var wanted = batches.ToHashSet();
        var ranges = string.Join(" OR ", batches.GroupBy(b => b.Node, StringComparer.Ordinal).Select(g =>
            $"(node = {SqlLiteral.String(g.Key)} AND batch_id BETWEEN {SqlLiteral.Integer(g.Min(b => b.BatchId))} AND {SqlLiteral.Integer(g.Max(b => b.BatchId))})"));
        // JSON: a node name may hold any character; 64-bit numbers arrive quoted.
        var text = await _client.QueryTextAsync(
            $"SELECT node, batch_id, relay, claimed_at FROM {_database}.{ClaimsTableName} WHERE {ranges} FORMAT JSONEachRow", cancellationToken);
        var claims = text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line =>
        {
            using var row = JsonDocument.Parse(line);
            var r = row.RootElement;
            return new Claim(r.GetProperty("node").GetString()!, ulong.Parse(r.GetProperty("batch_id").GetString()!, CultureInfo.InvariantCulture),
                r.GetProperty("relay").GetString()!, ulong.Parse(r.GetProperty("claimed_at").GetString()!, CultureInfo.InvariantCulture));
        }).Where(c => wanted.Contains((c.Node, c.BatchId))).ToList();
        return ClaimedElsewhere(claims, InstanceId);
    }

    /// <summary>The batches whose latest claim (by time, then relay id) is not <paramref name="self"/>'s.</summary>
    internal static IReadOnlySet<(string Node, ulong BatchId)> ClaimedElsewhere(IEnumerable<Claim> claims, string self) =>
        claims.GroupBy(c => (c.Node, c.BatchId))
            .Where(g => g.MaxBy(c => (c.ClaimedAt, c.Relay), ClaimOrder.Instance)!.Relay != self)
            .Select(g => g.Key)
            .ToHashSet();

    /// <summary>One relay's claim on a re-sent batch.</summary>
    internal sealed record Claim(string Node, ulong BatchId, string Relay, ulong ClaimedAt);

    private sealed class ClaimOrder : IComparer<(ulong At, string Relay)>
    {
        public static readonly ClaimOrder Instance = new();

        public int Compare((ulong At, string Relay) x, (ulong At, string Relay) y) =>
            x.At != y.At ? x.At.CompareTo(y.At) : string.CompareOrdinal(x.Relay, y.Relay);
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
