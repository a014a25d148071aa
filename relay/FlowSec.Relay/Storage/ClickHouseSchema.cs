using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FlowSec.Relay.Storage;

/// <summary>
/// Creates FlowSec's database and tables, idempotently: every statement is <c>IF NOT EXISTS</c>,
/// and <c>schema_version</c> records which numbered migrations ran, so a later release can add
/// steps (ALTERs) that run once. Several relays starting together may both run a step; each step
/// must therefore be idempotent itself, and readers take <c>max(version)</c>. A CREATE step uses
/// the table's current definition, so a later step that adds a column must tolerate the column
/// being there already: 18.16 has no <c>ADD COLUMN IF NOT EXISTS</c>, so an <c>ADD COLUMN</c> that
/// fails with error 44 ("already exists") counts as done. A step may hold several statements,
/// separated by <c>;</c> and a newline.
/// </summary>
public sealed class ClickHouseSchema
{
    private readonly ClickHouseHttpClient _client;
    private readonly string _database;
    private readonly ILogger _logger;

    /// <summary>
    /// Creates the schema manager for the database named in <paramref name="options"/>; it logs each
    /// migration step to <paramref name="logger"/>, since a step that rewrites stored rows can hold
    /// the relay's first insert for a while.
    /// </summary>
    public ClickHouseSchema(ClickHouseHttpClient client, ClickHouseOptions options, ILogger<ClickHouseSchema>? logger = null)
    {
        _client = client;
        _database = SqlLiteral.Identifier(options.Database);
        _logger = logger ?? NullLogger<ClickHouseSchema>.Instance;
    }

    /// <summary>The version this release creates.</summary>
    public static int LatestVersion => Migrations.Count;

    // Step n creates schema version n: SQL statements (arguments: database, whether LowCardinality
    // may be used), or a step with logic of its own.
    private static IReadOnlyList<Migration> Migrations { get; } =
    [
        new("flows table", FlowTable.Table.CreateSql),
        new("dns table", DnsTable.Table.CreateSql),
        new("process_events table", ProcessTable.Table.CreateSql),
        new("file_events table", FileTable.Table.CreateSql),
        new("alerts table", AlertTable.Table.CreateSql),
        new("dns.transport column", (db, lowCardinality) => DnsTable.Table.AddColumnSql("transport", db, lowCardinality)),
        new("batch_id on event tables, stored_batches table", (db, _) => string.Join(";\n",
            EventTables.All.Select(t => $"ALTER TABLE {db}.{t.Name} ADD COLUMN `{EventTable.BatchIdColumn}` UInt64")
                .Append(StoredBatches.CreateSql(db)))),
        // Step 8 also created flows_by_dst_port (one row per flow) until step 10 replaced it; a database
        // upgraded from before 8 gets only what step 10 keeps.
        new("flow_summary_src (materialized view, backfilled)", null, (schema, lowCardinality, ct) => schema.CreateFlowSummariesAsync(FlowSummary.Sources, lowCardinality, ct)),
        new("claimed_batches table", (db, _) => StoredBatches.CreateClaimsSql(db)),
        new("flow_dst_port_minutes replaces flows_by_dst_port (materialized view, backfilled)", null, (schema, lowCardinality, ct) => schema.ReplacePortIndexAsync(lowCardinality, ct)),
        new("labels and DNS names packed into one String per endpoint", null, (schema, _, ct) => schema.PackEndpointStringsAsync(ct)),
    ];

    private sealed record Migration(string Description, Func<string, bool, string>? Sql, Func<ClickHouseSchema, bool, CancellationToken, Task>? Run = null);

    /// <summary>Creates whatever is missing and returns the schema version now in place.</summary>
    public Task<int> EnsureAsync(CancellationToken cancellationToken = default) => EnsureAsync(Migrations.Count, cancellationToken);

    /// <summary>Runs the migrations up to version <paramref name="upTo"/> only: for tests that need a database as an older release left it.</summary>
    internal async Task<int> EnsureAsync(int upTo, CancellationToken cancellationToken)
    {
        // LowCardinality is experimental before 19.x (it needs allow_experimental_low_cardinality_type
        // there); on those servers the columns are plain String.
        var version = (await _client.QueryTextAsync("SELECT version()", cancellationToken)).Trim();
        var lowCardinality = int.TryParse(version.Split('.')[0], CultureInfo.InvariantCulture, out var major) && major >= 19;

        await _client.ExecuteAsync($"CREATE DATABASE IF NOT EXISTS {_database}", null, cancellationToken);
        await _client.ExecuteAsync(
            $"CREATE TABLE IF NOT EXISTS {_database}.schema_version (version UInt32, description String, applied_at DateTime('UTC')) " +
            "ENGINE = MergeTree ORDER BY version", null, cancellationToken);

        var current = await CurrentVersionAsync(cancellationToken);
        for (var v = current + 1; v <= upTo; v++)
        {
            var (description, sql, run) = Migrations[v - 1];
            _logger.LogInformation("ClickHouse schema: migrating {Database} to version {Version} of {Latest}: {Description}", _database, v, Migrations.Count, description);
            var started = Stopwatch.StartNew();
            if (run is not null)
            {
                await run(this, lowCardinality, cancellationToken);
            }
            foreach (var statement in sql?.Invoke(_database, lowCardinality).Split(";\n") ?? [])
            {
                try
                {
                    await _client.ExecuteAsync(statement, null, cancellationToken);
                }
                catch (ClickHouseException e) when (e.Code == EventTable.DuplicateColumnCode && statement.Contains(" ADD COLUMN ", StringComparison.Ordinal))
                {
                    // The table was created after the column joined its definition, or another relay ran this step.
                }
            }
            await _client.ExecuteAsync(
                $"INSERT INTO {_database}.schema_version (version, description, applied_at) " +
                $"VALUES ({SqlLiteral.Integer((long)v)}, {SqlLiteral.String(description)}, now())", null, cancellationToken);
            _logger.LogInformation("ClickHouse schema: version {Version} in place after {Seconds:0.0} s", v, started.Elapsed.TotalSeconds);
        }

        if (upTo < Migrations.Count)
        {
            return Math.Max(current, upTo);
        }

        // A table dropped behind our back (the writer then sees error 60) comes back here; for
        // tables that exist this changes nothing.
        foreach (var table in EventTables.All)
        {
            await _client.ExecuteAsync(table.CreateSql(_database, lowCardinality), null, cancellationToken);
        }
        await _client.ExecuteAsync(StoredBatches.CreateSql(_database), null, cancellationToken);
        await _client.ExecuteAsync(StoredBatches.CreateClaimsSql(_database), null, cancellationToken);

        return Math.Max(current, Migrations.Count);
    }

    /// <summary>
    /// Drops the per-flow port index of schema version 8 (its view first, so nothing fills it while it
    /// goes) and creates the per-minute port counts that replace it. Relays of the release before
    /// read the old index for "newest flows to a port"; those queries fail on an upgraded database
    /// until those relays are upgraded too.
    /// </summary>
    private async Task ReplacePortIndexAsync(bool lowCardinality, CancellationToken ct)
    {
        await _client.ExecuteAsync($"DROP TABLE IF EXISTS {_database}.`flows_by_dst_port_mv`", null, ct);
        await _client.ExecuteAsync($"DROP TABLE IF EXISTS {_database}.`flows_by_dst_port`", null, ct);
        await CreateFlowSummariesAsync(FlowSummary.DestinationPortMinutes, lowCardinality, ct);
    }

    /// <summary>
    /// Creates a table derived from flows (<see cref="FlowSummary"/>) and the materialized view that
    /// fills it from every later INSERT, then fills it from the flows already stored, one day
    /// partition per INSERT … SELECT so no statement grows with the table's age. The view is created
    /// without IF NOT EXISTS: only the relay whose CREATE succeeded backfills, so two relays running
    /// this step together do not count the old rows twice (the other gets error 57 and goes on).
    /// The relay runs migrations before its writer's first INSERT; rows another relay inserts while
    /// the view is being created could be summed twice or not at all, so upgrade a fleet with one
    /// relay writing, or accept that window.
    /// </summary>
    private async Task CreateFlowSummariesAsync(FlowSummary derived, bool lowCardinality, CancellationToken ct)
    {
        await _client.ExecuteAsync(derived.CreateSql(_database, lowCardinality), null, ct);
        try
        {
            await _client.ExecuteAsync(derived.CreateViewSql(_database), null, ct);
        }
        catch (ClickHouseException e) when (e.Code == TableExistsCode)
        {
            return; // another relay created the view, and backfills
        }
        var partitions = await _client.QueryTextAsync(
            $"SELECT DISTINCT partition FROM system.parts WHERE active AND database = {SqlLiteral.String(_database)} " +
            $"AND table = {SqlLiteral.String(FlowTable.Table.Name)} ORDER BY partition FORMAT TabSeparated", ct);
        foreach (var line in partitions.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var day = int.Parse(line.Trim().Trim('\''), NumberStyles.None, CultureInfo.InvariantCulture);
            await _client.ExecuteAsync(derived.BackfillSql(_database, day), null, ct);
        }
    }

    /// <summary>
    /// Replaces every endpoint's label arrays (<c>{side}_labels.key</c>, <c>.value</c>) and names array
    /// (<c>{side}_names</c>) by the <see cref="PackedStrings"/> columns, in every event table: adds them
    /// where the old ones were, fills them from the old ones with one <c>ALTER … UPDATE</c> mutation per
    /// table (18.16 runs it in the background; this waits for it), then drops the old ones. Restartable:
    /// a table whose old columns are gone is done; one whose mutation is still running is waited for, not
    /// mutated again. Rows an older relay inserts while this runs get no labels or names: upgrade a
    /// fleet with one relay writing.
    /// </summary>
    private async Task PackEndpointStringsAsync(CancellationToken ct)
    {
        foreach (var table in EventTables.All)
        {
            var columns = await ColumnsAsync(table.Name, ct);
            var sides = new[] { "src", "dst" }.Where(side => columns.Contains($"{side}_labels.key")).ToArray();
            if (sides.Length == 0)
            {
                continue; // created with the packed columns, or done before
            }

            var target = $"{_database}.{table.Name}";
            foreach (var side in sides)
            {
                await AddColumnIfMissingAsync(target, columns, $"{side}_{EndpointColumns.LabelsColumn}", $"{side}_namespace", ct);
                await AddColumnIfMissingAsync(target, columns, $"{side}_{EndpointColumns.NamesColumn}", $"{side}_{EndpointColumns.LabelsColumn}", ct);
            }

            _logger.LogInformation("ClickHouse schema: packing labels and DNS names of {Table} (one ALTER … UPDATE over all its rows; the relay's inserts wait for it)", target);
            if (!await WaitForMutationsAsync(table.Name, EndpointColumns.LabelsColumn, ct))
            {
                var assignments = sides.SelectMany(side => new[]
                {
                    $"`{side}_{EndpointColumns.LabelsColumn}` = {PackedStrings.LabelsSql($"{side}_labels.key", $"{side}_labels.value")}",
                    $"`{side}_{EndpointColumns.NamesColumn}` = {PackedStrings.NamesSql($"{side}_names")}",
                });
                await _client.ExecuteAsync($"ALTER TABLE {target} UPDATE {string.Join(", ", assignments)} WHERE 1", null, ct);
                await WaitForMutationsAsync(table.Name, EndpointColumns.LabelsColumn, ct);
            }

            foreach (var side in sides)
            {
                await _client.ExecuteAsync(
                    $"ALTER TABLE {target} DROP COLUMN `{side}_labels.key`, DROP COLUMN `{side}_labels.value`, DROP COLUMN `{side}_names`", null, ct);
            }
        }
    }

    private async Task<HashSet<string>> ColumnsAsync(string table, CancellationToken ct)
    {
        var text = await _client.QueryTextAsync(
            $"SELECT name FROM system.columns WHERE database = {SqlLiteral.String(_database)} AND table = {SqlLiteral.String(table)} FORMAT TabSeparatedRaw", ct);
        return text.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
    }

    private async Task AddColumnIfMissingAsync(string target, HashSet<string> columns, string column, string after, CancellationToken ct)
    {
        if (!columns.Contains(column))
        {
            await _client.ExecuteAsync($"ALTER TABLE {target} ADD COLUMN `{column}` String AFTER `{after}`", null, ct);
        }
    }

    /// <summary>
    /// Waits until no mutation of <paramref name="table"/> whose command names <paramref name="columnPart"/>
    /// is left running; true when there was one (so it need not be issued again).
    /// </summary>
    private async Task<bool> WaitForMutationsAsync(string table, string columnPart, CancellationToken ct)
    {
        var condition = $"database = {SqlLiteral.String(_database)} AND table = {SqlLiteral.String(table)} " +
                        $"AND position(command, {SqlLiteral.String(columnPart)}) > 0 AND is_done = 0";
        var waited = false;
        while (int.Parse((await _client.QueryTextAsync($"SELECT count() FROM system.mutations WHERE {condition}", ct)).Trim(), CultureInfo.InvariantCulture) > 0)
        {
            waited = true;
            await Task.Delay(MutationPollInterval, ct);
        }

        return waited;
    }

    private static readonly TimeSpan MutationPollInterval = TimeSpan.FromMilliseconds(200);

    /// <summary>ClickHouse's error code for a table or view that already exists (TABLE_ALREADY_EXISTS).</summary>
    private const int TableExistsCode = 57;

    /// <summary>The highest migration recorded in <c>schema_version</c> (0 when none).</summary>
    public async Task<int> CurrentVersionAsync(CancellationToken cancellationToken = default)
    {
        var text = await _client.QueryTextAsync($"SELECT max(version) FROM {_database}.schema_version", cancellationToken);
        return int.Parse(text.Trim(), CultureInfo.InvariantCulture);
    }
}
