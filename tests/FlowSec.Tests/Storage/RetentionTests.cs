using FlowSec.Relay.Storage;
using Microsoft.Extensions.Logging.Abstractions;

namespace FlowSec.Tests.Storage;

/// <summary>Retention drops whole day partitions past the limit, in every event table, and nothing newer.</summary>
public sealed class RetentionTests(ClickHouseServer server) : IClassFixture<ClickHouseServer>
{
    [Fact]
    public async Task Day_partitions_older_than_the_retention_are_dropped_and_newer_ones_kept()
    {
        var database = ClickHouseServer.NewDatabase();
        var options = server.Options(database);
        options.RetentionDays = 7;
        await new ClickHouseSchema(server.Client, options).EnsureAsync();
        var now = new DateTimeOffset(2026, 11, 22, 12, 0, 0, TimeSpan.Zero);
        foreach (var (table, days) in new[] { ("flows", 10), ("flows", 6), ("flows", 0), ("dns", 30), ("file_events", 8), ("file_events", 7) })
        {
            var time = now.AddDays(-days).ToUnixTimeSeconds();
            await server.RunClientAsync($"INSERT INTO {database}.{table} (time, time_ns, node) VALUES ({time}, {time * 1_000_000_000L}, 'n')");
        }

        var retention = new ClickHouseRetention(server.Client, options, NullLogger<ClickHouseRetention>.Instance);
        (await retention.DropExpiredAsync(now, CancellationToken.None)).Should().Be(5,
            "flows -10 d (and its summary and port counts), dns -30 d and file_events -8 d are past 7 days");

        async Task<string> Days(string table) => (await server.RunClientAsync(
            $"SELECT groupArray(d) FROM (SELECT toString(toDate(time)) AS d FROM {database}.{table} ORDER BY d)")).Trim();
        (await Days("flows")).Should().Be("['2026-11-16','2026-11-22']");
        (await Days("dns")).Should().Be("[]");
        (await Days("file_events")).Should().Be("['2026-11-15']");
        // The tables derived from flows (filled by their views from the inserts above) keep what flows keeps.
        (await server.RunClientAsync($"SELECT groupArray(d) FROM (SELECT toString(toDate(hour)) AS d FROM {database}.flow_summary_src ORDER BY d)")).Trim()
            .Should().Be("['2026-11-16','2026-11-22']");
        (await server.RunClientAsync($"SELECT groupArray(d) FROM (SELECT DISTINCT toString(toDate(minute)) AS d FROM {database}.flow_dst_port_minutes ORDER BY d)")).Trim()
            .Should().Be("['2026-11-16','2026-11-22']");
        (await retention.DropExpiredAsync(now, CancellationToken.None)).Should().Be(0, "a second pass finds nothing left to drop");
    }

    [Fact]
    public async Task Retention_zero_keeps_everything()
    {
        var options = server.Options(ClickHouseServer.NewDatabase());
        await new ClickHouseSchema(server.Client, options).EnsureAsync();
        var retention = new ClickHouseRetention(server.Client, options, NullLogger<ClickHouseRetention>.Instance);
        (await retention.DropExpiredAsync(DateTimeOffset.UtcNow.AddYears(5), CancellationToken.None)).Should().Be(0);
    }
}
