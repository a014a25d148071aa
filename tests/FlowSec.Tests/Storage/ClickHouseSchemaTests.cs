using FlowSec.Api.Filters;
using FlowSec.Api.V1;
using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>Schema creation and upgrade on the real 18.16 server.</summary>
public sealed class ClickHouseSchemaTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    private static readonly string[] EventTableNames = ["alerts", "dns", "file_events", "flows", "process_events"];

    // The event tables, the tables derived from flows and their views, bookkeeping; in name order.
    private static readonly string[] AllTables =
    [
        .. EventTableNames, "schema_version", "stored_batches", "claimed_batches",
        .. FlowSummary.All.SelectMany(s => new[] { s.Name, s.ViewName }),
    ];

    /// <summary>
    /// The flows table exactly as schema version 1 (the release before DNS, process and file
    /// tables) created it on 18.16, frozen here: the upgrade must work from this, whatever the
    /// code's column model becomes.
    /// </summary>
    private const string FlowsV1 =
        "CREATE TABLE IF NOT EXISTS {0}.flows\n(\n    " +
        "`time` DateTime('UTC'),\n    `time_ns` UInt64,\n    `node` String,\n    `capture` String,\n    " +
        "`src_ip` FixedString(16),\n    `src_port` UInt16,\n    `src_pid` UInt32,\n    `src_process` String,\n    `src_cgroup_id` UInt64,\n    " +
        "`src_container_id` String,\n    `src_workload` String,\n    `src_pod` String,\n    `src_namespace` String,\n    " +
        "`src_labels.key` Array(String),\n    `src_labels.value` Array(String),\n    `src_names` Array(String),\n    " +
        "`dst_ip` FixedString(16),\n    `dst_port` UInt16,\n    `dst_pid` UInt32,\n    `dst_process` String,\n    `dst_cgroup_id` UInt64,\n    " +
        "`dst_container_id` String,\n    `dst_workload` String,\n    `dst_pod` String,\n    `dst_namespace` String,\n    " +
        "`dst_labels.key` Array(String),\n    `dst_labels.value` Array(String),\n    `dst_names` Array(String),\n    " +
        "`protocol` Enum8('unspecified' = 0, 'ICMP' = 1, 'TCP' = 6, 'UDP' = 17),\n    `state` String,\n    `duration_ns` UInt64,\n    " +
        "`direction` String,\n    `verdict` Enum8('unspecified' = 0, 'forwarded' = 1, 'dropped' = 2),\n    `drop_reason` String,\n    " +
        "`bytes_sent` UInt64,\n    `bytes_received` UInt64,\n    `packets_sent` UInt64,\n    `packets_received` UInt64,\n    " +
        "`rtt_us` UInt32,\n    `retransmits` UInt32,\n    `socket_id` UInt64\n)\n" +
        "ENGINE = MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (toStartOfHour(time), src_namespace, src_pod, src_ip, dst_ip, time_ns)";

    [Fact]
    public async Task Creating_the_schema_twice_is_idempotent()
    {
        var db = ClickHouseServer.NewDatabase();
        var schema = new ClickHouseSchema(ch.Client, ch.Options(db));

        (await schema.EnsureAsync()).Should().Be(ClickHouseSchema.LatestVersion);
        var before = await ShowCreateAllAsync(db);
        (await schema.EnsureAsync()).Should().Be(ClickHouseSchema.LatestVersion);

        (await ShowCreateAllAsync(db)).Should().Equal(before);
        (await ch.RunClientAsync($"SELECT count(), max(version) FROM {db}.schema_version")).Trim()
            .Should().Be($"{ClickHouseSchema.LatestVersion}\t{ClickHouseSchema.LatestVersion}", "each migration is recorded once");
        (await TablesAsync(db)).Should().Equal(AllTables.Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task An_old_database_with_only_the_flows_table_is_upgraded_with_its_data_intact()
    {
        var db = ClickHouseServer.NewDatabase();
        var flows = TestFlows.Flows(200);
        await ch.Client.ExecuteAsync($"CREATE DATABASE {db}");
        await ch.Client.ExecuteAsync(
            $"CREATE TABLE {db}.schema_version (version UInt32, description String, applied_at DateTime('UTC')) ENGINE = MergeTree ORDER BY version");
        await ch.Client.ExecuteAsync($"INSERT INTO {db}.schema_version VALUES (1, 'flows table', now())");
        await ch.Client.ExecuteAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, FlowsV1, db));
        // Inserted by the real client in its own format, so the old rows do not depend on our writer.
        foreach (var sql in flows.Chunk(50).Select(chunk => $"INSERT INTO {db}.flows (time, time_ns, src_pod, bytes_sent) VALUES " +
                     string.Join(", ", chunk.Select(f => $"({f.TimeUnixNano / 1_000_000_000}, {f.TimeUnixNano}, {SqlLiteral.String(f.Source.Pod)}, {f.Flow.BytesSent})"))))
        {
            await ch.RunClientAsync(sql);
        }

        var oldCreate = await ch.RunClientAsync($"SHOW CREATE TABLE {db}.flows");
        var schema = new ClickHouseSchema(ch.Client, ch.Options(db));
        (await schema.CurrentVersionAsync()).Should().Be(1);

        (await schema.EnsureAsync()).Should().Be(ClickHouseSchema.LatestVersion);

        (await TablesAsync(db)).Should().Equal(AllTables.Order(StringComparer.Ordinal));
        // The only changes to the old table: the batch id each row came in, added as the last column, and
        // each endpoint's label and name arrays packed into one String each, where the arrays were.
        var upgradedCreate = oldCreate.Replace("socket_id UInt64)", "socket_id UInt64,  batch_id UInt64)", StringComparison.Ordinal);
        foreach (var side in new[] { "src", "dst" })
        {
            upgradedCreate = upgradedCreate.Replace($"`{side}_labels.key` Array(String),  `{side}_labels.value` Array(String),  {side}_names Array(String)",
                $"{side}_labels_text String,  {side}_names_text String", StringComparison.Ordinal);
        }
        upgradedCreate.Should().NotBe(oldCreate);
        upgradedCreate.Should().NotContain("Array(String)");
        (await ch.RunClientAsync($"SHOW CREATE TABLE {db}.flows")).Should().Be(upgradedCreate, "the flows table only gains batch_id and packs labels and names");
        (await ch.RunClientAsync($"SELECT version, description FROM {db}.schema_version ORDER BY version FORMAT TabSeparated"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Should().StartWith(["1\tflows table", "2\tdns table", "3\tprocess_events table", "4\tfile_events table"])
            .And.ContainMatch("*\tbatch_id on event tables, stored_batches table")
            .And.ContainMatch("*\tdns.transport column")
            .And.ContainMatch("*\talerts table")
            .And.HaveCount(ClickHouseSchema.LatestVersion);
        (await ch.RunClientAsync($"SELECT count(), sum(bytes_sent), uniqExact(src_pod), min(time_ns), max(time_ns) FROM {db}.flows")).Trim()
            .Should().Be(string.Join('\t', 200, flows.Aggregate(0UL, (s, f) => unchecked(s + f.Flow.BytesSent)), flows.Select(f => f.Source.Pod).Distinct().Count(),
                flows[0].TimeUnixNano, flows[^1].TimeUnixNano));

        // The refactored column model still describes the v1 table: a fresh database gets the same flows DDL,
        // and the writer and query work on the upgraded one.
        var fresh = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(fresh)).EnsureAsync();
        (await ch.RunClientAsync($"SHOW CREATE TABLE {fresh}.flows")).Replace(fresh, db).Should().Be(upgradedCreate);
        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, db);
        var events = TestEvents.Mixed(10).Select(e => { e.TimeUnixNano += 86_400UL * 1_000_000_000; return e; }).ToList(); // a day later
        var batch = new EventBatch();
        batch.Events.AddRange(events);
        await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == events.Count, TimeSpan.FromSeconds(30), () => $"stored {relay.Writer.EventsStored}");
        (await relay.Store.QueryAsync(new EventQuery(Since: DateTimeOffset.UnixEpoch.AddTicks((long)(events[0].TimeUnixNano / 100))))).Should().Equal(events);
        (await relay.Store.QueryFlowsAsync(new EventQuery())).Should().HaveCount(210);
    }

    [Fact]
    public async Task Labels_and_names_stored_as_arrays_by_the_release_before_are_packed_and_read_and_filtered_as_before()
    {
        var db = ClickHouseServer.NewDatabase();
        await ch.Client.ExecuteAsync($"CREATE DATABASE {db}");
        foreach (var table in EventTables.All)
        {
            await ch.Client.ExecuteAsync(ArraysInsteadOfPacked(table.CreateSql(db, lowCardinality: false)));
        }

        var log = new ListLogger<ClickHouseSchema>();
        var schema = new ClickHouseSchema(ch.Client, ch.Options(db), log);
        (await schema.EnsureAsync(ClickHouseSchema.LatestVersion - 1, CancellationToken.None)).Should().Be(ClickHouseSchema.LatestVersion - 1);
        List<Event> events = [.. TestEvents.Mixed(60), .. Enumerable.Range(0, 10).Select(TestEvents.Alert)];
        foreach (var (e, i) in events.Select((e, i) => (e, i)).Where(x => x.i % 3 == 0 && x.e.Source is not null))
        {
            // Separators and escapes inside keys, values and names; upper case and trailing dots in names.
            e.Source.Labels["sep\x1e|\x1d"] = "v\x1f\x1d" + "0";
            e.Source.Names.Add(i % 2 == 0 ? "Odd\x1e.Example.COM." : "");
        }
        foreach (var table in EventTables.All)
        {
            await InsertAsArraysAsync(db, table, events.Where(e => table.Types.Contains(e.Type)).ToList());
        }

        // As if a relay died right after adding one of the new columns: the step runs again from there.
        await ch.Client.ExecuteAsync($"ALTER TABLE {db}.flows ADD COLUMN src_labels_text String AFTER src_namespace");
        (await schema.EnsureAsync()).Should().Be(ClickHouseSchema.LatestVersion);
        // The step rewrites every stored row while the relay's inserts wait: the operator is told which step and which table.
        log.Messages.Should().Contain(m => m.Contains($"to version {ClickHouseSchema.LatestVersion} of {ClickHouseSchema.LatestVersion}", StringComparison.Ordinal))
            .And.Contain(m => m.Contains($"packing labels and DNS names of {db}.flows", StringComparison.Ordinal))
            .And.Contain(m => m.Contains($"version {ClickHouseSchema.LatestVersion} in place after", StringComparison.Ordinal));

        var fresh = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(fresh)).EnsureAsync();
        (await ShowCreateAllAsync(db)).Should().Equal((await ShowCreateAllAsync(fresh)).Select(c => c.Replace(fresh, db, StringComparison.Ordinal)),
            "the migrated tables are the tables this release creates");
        (await ch.RunClientAsync($"SELECT hex(src_labels_text), hex(dst_names_text) FROM {db}.flows ORDER BY time_ns FORMAT TabSeparated"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal(events.Where(e => e.Type == EventType.Flow)
                .Select(e => Hex(PackedStrings.Labels(e.Source.Labels)) + "\t" + Hex(PackedStrings.Names(e.Destination.Names))),
                "the migration's SQL packs byte for byte as the writer does");

        var store = new ClickHouseEventStore(ch.Client, ch.Options(db));
        foreach (var table in EventTables.All)
        {
            (await store.QueryAsync(new EventQuery(), table.Types.ToArray())).Should().Equal(events.Where(e => table.Types.Contains(e.Type)), table.Name);
        }

        foreach (var (filter, selectsSome) in new (EventFilter, bool)[]
                 {
                     (new EventFilter { Label = { "app" } }, true), (new EventFilter { Label = { "app=web-3" } }, true),
                     (new EventFilter { Label = { "tier=front'end" } }, true), (new EventFilter { Label = { "x\\y=" } }, true),
                     (new EventFilter { Label = { "sep\x1e|\x1d=v\x1f\x1d" + "0" } }, true), (new EventFilter { Label = { "sep\x1e|\x1d=v" } }, false),
                     (new EventFilter { Label = { "k8s-app=kube-dns" } }, true), (new EventFilter { DnsName = { "web.shop.svc" } }, true),
                     (new EventFilter { DnsName = { "*.svc" } }, true), (new EventFilter { DnsName = { "odd\x1e.example.com" } }, true),
                     (new EventFilter { DnsName = { "*.example.com" } }, true), (new EventFilter { DnsName = { "*.shop" } }, false),
                 })
        {
            var matcher = new EventFilterMatcher([filter], []);
            var expected = events.Where(matcher.Matches).Select(e => e.TimeUnixNano).Order().ToList();
            (await store.QueryAsync(new EventQuery(Filter: matcher), EventTables.StoredTypes)).Select(e => e.TimeUnixNano).Order()
                .Should().Equal(expected, filter.ToString());
            (expected.Count > 0).Should().Be(selectsSome, filter.ToString());
        }
    }

    private static string Hex(string s) => Convert.ToHexString(System.Text.Encoding.UTF8.GetBytes(s));

    // The DDL of schema version 10: each endpoint's labels were Nested-style arrays, its names an array.
    private static string ArraysInsteadOfPacked(string createSql)
    {
        foreach (var side in new[] { "src", "dst" })
        {
            createSql = createSql.Replace($"`{side}_labels_text` String,\n    `{side}_names_text` String",
                $"`{side}_labels.key` Array(String),\n    `{side}_labels.value` Array(String),\n    `{side}_names` Array(String)", StringComparison.Ordinal);
        }

        return createSql;
    }

    // Rows as the release before wrote them: the map's keys, then its values, then the names, each an Array(String).
    private async Task InsertAsArraysAsync(string db, EventTable table, List<Event> events)
    {
        var columns = new List<string>();
        var writers = new List<Action<RowBinaryWriter, Event>>();
        foreach (var column in table.Columns)
        {
            var side = column.Name.Split('_')[0];
            Endpoint Of(Event e) => (side == "src" ? e.Source : e.Destination) ?? new Endpoint();
            if (column.Name.EndsWith("_labels_text", StringComparison.Ordinal))
            {
                columns.AddRange([$"{side}_labels.key", $"{side}_labels.value"]);
                writers.Add((w, e) => w.WriteArray(Of(e).Labels.Keys, (w2, k) => w2.WriteString(k)));
                writers.Add((w, e) => w.WriteArray(Of(e).Labels.Values, (w2, v) => w2.WriteString(v)));
            }
            else if (column.Name.EndsWith("_names_text", StringComparison.Ordinal))
            {
                columns.Add($"{side}_names");
                writers.Add((w, e) => w.WriteArray(Of(e).Names, (w2, n) => w2.WriteString(n)));
            }
            else
            {
                columns.Add(column.Name);
                writers.Add(column.Write);
            }
        }

        var rows = new RowBinaryWriter();
        foreach (var e in events)
        {
            writers.ForEach(write => write(rows, e));
        }

        await ch.Client.InsertRowBinaryAsync($"{db}.{table.Name}", columns, rows.WrittenMemory);
    }

    [Fact]
    public async Task The_dns_transport_column_is_added_to_an_older_dns_table_and_adding_it_again_counts_as_done()
    {
        var db = ClickHouseServer.NewDatabase();
        // The dns table as it was before the transport column, with a row in it.
        string dnsBefore = DnsTable.Table.CreateSql(db, lowCardinality: false).Replace(",\n    `transport` String", "", StringComparison.Ordinal);
        dnsBefore.Should().NotContain("transport");
        async Task RecordStepsBeforeTransport()
        {
            await ch.Client.ExecuteAsync($"DROP TABLE IF EXISTS {db}.schema_version");
            await ch.Client.ExecuteAsync(
                $"CREATE TABLE {db}.schema_version (version UInt32, description String, applied_at DateTime('UTC')) ENGINE = MergeTree ORDER BY version");
            await ch.Client.ExecuteAsync($"INSERT INTO {db}.schema_version VALUES (1, 'flows table', now()), (2, 'dns table', now()), (3, 'process_events table', now()), (4, 'file_events table', now())");
        }
        await ch.Client.ExecuteAsync($"CREATE DATABASE {db}");
        await RecordStepsBeforeTransport();
        await ch.Client.ExecuteAsync(dnsBefore);
        // The other tables of version 4 (a later step alters every event table).
        foreach (var table in new[] { FlowTable.Table, ProcessTable.Table, FileTable.Table })
        {
            await ch.Client.ExecuteAsync(table.CreateSql(db, false));
        }
        await ch.RunClientAsync($"INSERT INTO {db}.dns (time, time_ns, query) VALUES (1764000000, 1764000000000000000, 'old.example')");
        var schema = new ClickHouseSchema(ch.Client, ch.Options(db));

        (await schema.EnsureAsync()).Should().Be(ClickHouseSchema.LatestVersion);

        (await ch.RunClientAsync($"SHOW CREATE TABLE {db}.dns")).Should().Contain("transport String");
        (await ch.RunClientAsync($"SELECT query, transport FROM {db}.dns FORMAT TabSeparated")).TrimEnd('\n').Should().Be("old.example\t", "old rows have no transport");

        // A relay that had not recorded the step runs it again on a table that has the column: error 44, done.
        await RecordStepsBeforeTransport();
        (await schema.EnsureAsync()).Should().Be(ClickHouseSchema.LatestVersion);
        (await ch.RunClientAsync($"SELECT count() FROM {db}.schema_version WHERE description = 'dns.transport column'")).Trim().Should().Be("1");
    }

    [Theory]
    [InlineData("flows", "src_ip")]
    [InlineData("dns", "query")]
    [InlineData("process_events", "pid")]
    [InlineData("file_events", "path")]
    public async Task Each_table_partitions_by_day_and_a_pod_time_window_uses_the_index(string table, string keyColumn)
    {
        var db = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync();

        var create = await ch.RunClientAsync($"SHOW CREATE TABLE {db}.{table}");
        create.Should().Contain("PARTITION BY toYYYYMMDD(time)").And.Contain("src_ip FixedString(16)")
            .And.Contain("src_labels_text String").And.NotContain("src_labels.key").And.NotContain("src_names Array").And.Contain("time_ns UInt64")
            .And.Contain($"ORDER BY (toStartOfHour(time), src_namespace, src_pod, {keyColumn}");

        // force_* make the server refuse a query that would scan without partition or key pruning.
        var count = await ch.RunClientAsync(
            $"SELECT count() FROM {db}.{table} WHERE time >= toDateTime('2026-11-22 02:00:00', 'UTC') AND time < toDateTime('2026-11-22 02:15:00', 'UTC') " +
            "AND src_namespace = 'shop' AND src_pod = 'web-1-abc1'",
            "--force_primary_key=1", "--force_index_by_date=1");
        count.Trim().Should().Be("0");
    }

    [Fact]
    public async Task The_LowCardinality_variant_for_newer_servers_takes_the_same_rows()
    {
        // 18.16 uses plain String; this checks the DDL newer servers get, on a server that allows it.
        var db = ClickHouseServer.NewDatabase();
        await ch.Client.ExecuteAsync($"CREATE DATABASE {db}");
        List<Event> events = [.. TestEvents.Mixed(20), .. Enumerable.Range(0, 20).Select(TestEvents.Alert)];
        var store = new ClickHouseEventStore(ch.Client, ch.Options(db));
        foreach (var table in EventTables.All)
        {
            await ch.Client.ExecuteAsync(table.CreateSql(db, lowCardinality: true));
            var rows = new RowBinaryWriter();
            var stored = events.Where(e => table.Types.Contains(e.Type)).ToList();
            stored.ForEach(e => table.WriteRow(rows, e));

            await ch.Client.InsertRowBinaryAsync($"{db}.{table.Name}", table.ColumnNames, rows.WrittenMemory);

            (await store.QueryAsync(new EventQuery(), table.Types.ToArray())).Should().Equal(stored, table.Name);
        }

        (await ch.RunClientAsync($"SELECT table, type FROM system.columns WHERE database = '{db}' AND name IN ('src_process', 'answers.type') ORDER BY table, name"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal(
                "alerts\tLowCardinality(String)", "dns\tArray(LowCardinality(String))", "dns\tLowCardinality(String)", "file_events\tLowCardinality(String)",
                "flows\tLowCardinality(String)", "process_events\tLowCardinality(String)");
    }

    private async Task<List<string>> ShowCreateAllAsync(string db)
    {
        var result = new List<string>();
        foreach (var table in EventTableNames)
        {
            result.Add(await ch.RunClientAsync($"SHOW CREATE TABLE {db}.{table}"));
        }

        return result;
    }

    private async Task<string[]> TablesAsync(string db) =>
        (await ch.RunClientAsync($"SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name")).Split('\n', StringSplitOptions.RemoveEmptyEntries);
}
