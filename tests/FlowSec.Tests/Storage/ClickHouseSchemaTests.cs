using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>Schema creation on the real 18.16 server.</summary>
public sealed class ClickHouseSchemaTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    [Fact]
    public async Task Creating_the_schema_twice_is_idempotent()
    {
        var db = ClickHouseServer.NewDatabase();
        var schema = new ClickHouseSchema(ch.Client, ch.Options(db));

        (await schema.EnsureAsync()).Should().Be(ClickHouseSchema.LatestVersion);
        var before = await ch.RunClientAsync($"SHOW CREATE TABLE {db}.flows");
        (await schema.EnsureAsync()).Should().Be(ClickHouseSchema.LatestVersion);

        (await ch.RunClientAsync($"SHOW CREATE TABLE {db}.flows")).Should().Be(before);
        (await ch.RunClientAsync($"SELECT count(), max(version) FROM {db}.schema_version")).Trim()
            .Should().Be($"{ClickHouseSchema.LatestVersion}\t{ClickHouseSchema.LatestVersion}", "each migration is recorded once");
        (await ch.RunClientAsync($"SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name")).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Should().Equal("flows", "schema_version");
    }

    [Fact]
    public async Task The_flows_table_partitions_by_day_and_a_pod_time_window_uses_the_index()
    {
        var db = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync();

        var create = await ch.RunClientAsync($"SHOW CREATE TABLE {db}.flows");
        create.Should().Contain("PARTITION BY toYYYYMMDD(time)").And.Contain("src_ip FixedString(16)")
            .And.Contain("`src_labels.key` Array(String)").And.Contain("time_ns UInt64");

        // force_* make the server refuse a query that would scan without partition or key pruning.
        var count = await ch.RunClientAsync(
            $"SELECT count() FROM {db}.flows WHERE time >= toDateTime('2026-11-22 02:00:00', 'UTC') AND time < toDateTime('2026-11-22 02:15:00', 'UTC') " +
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
        await ch.Client.ExecuteAsync(FlowTable.CreateSql(db, lowCardinality: true));
        (await ch.RunClientAsync($"SELECT type FROM system.columns WHERE database = '{db}' AND name = 'src_process'")).Trim()
            .Should().Be("LowCardinality(String)");
        var flows = TestFlows.Flows(20);
        var rows = new RowBinaryWriter();
        flows.ForEach(f => FlowTable.WriteRow(rows, f));

        await ch.Client.InsertRowBinaryAsync($"{db}.flows", FlowTable.ColumnNames, rows.WrittenMemory);

        (await new ClickHouseEventStore(ch.Client, ch.Options(db)).QueryFlowsAsync(new EventQuery())).Should().Equal(flows);
    }
}
