using System.Globalization;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FlowSec.Relay.Storage;

/// <summary>
/// Drops whole day partitions older than <see cref="ClickHouseOptions.RetentionDays"/> from every
/// event table and every table derived from flows, hourly. ClickHouse 18.16 has no TTL, and dropping a partition is a cheap
/// metadata operation where deleting rows would rewrite data. Off when RetentionDays is 0.
/// </summary>
public sealed class ClickHouseRetention(ClickHouseHttpClient client, ClickHouseOptions options, ILogger<ClickHouseRetention> logger)
    : BackgroundService
{
    private static readonly TimeSpan Interval = TimeSpan.FromHours(1);
    private long _dropped;

    /// <summary>Day partitions dropped since start.</summary>
    public long PartitionsDropped => Interlocked.Read(ref _dropped);

    /// <summary>Drops the day partitions that ended more than RetentionDays before <paramref name="now"/>; returns how many.</summary>
    public async Task<int> DropExpiredAsync(DateTimeOffset now, CancellationToken ct)
    {
        if (options.RetentionDays <= 0)
        {
            return 0;
        }
        var oldestKept = int.Parse(now.UtcDateTime.Date.AddDays(-options.RetentionDays).ToString("yyyyMMdd", CultureInfo.InvariantCulture),
            CultureInfo.InvariantCulture);
        var database = SqlLiteral.Identifier(options.Database);
        var dropped = 0;
        // stored_batches and claimed_batches too: their records only matter while a batch may still
        // be re-sent, and their rows' days are when they were recorded. The tables derived from flows (summaries, port
        // index) partition by the same days, so they keep exactly what flows keeps.
        foreach (var table in EventTables.All.Select(t => t.Name).Concat(FlowSummary.All.Select(s => s.Name)).Append(StoredBatches.TableName).Append(StoredBatches.ClaimsTableName))
        {
            var text = await client.QueryTextAsync(
                $"SELECT DISTINCT partition FROM system.parts WHERE active AND database = {SqlLiteral.String(options.Database)} " +
                $"AND table = {SqlLiteral.String(table)} FORMAT TabSeparated", ct);
            foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                // Partitions are toYYYYMMDD(time); anything else is not ours to drop.
                if (!int.TryParse(line.Trim().Trim('\''), NumberStyles.None, CultureInfo.InvariantCulture, out var day) || day >= oldestKept)
                {
                    continue;
                }
                await client.ExecuteAsync($"ALTER TABLE {database}.{table} DROP PARTITION {SqlLiteral.Integer(day)}", cancellationToken: ct);
                logger.LogInformation("Retention: dropped {Table} partition {Day} (keeping {Days} days)", table, day, options.RetentionDays);
                dropped++;
                Interlocked.Increment(ref _dropped);
            }
        }
        return dropped;
    }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (options.RetentionDays <= 0)
        {
            return;
        }
        using var timer = new PeriodicTimer(Interval);
        do
        {
            try
            {
                await DropExpiredAsync(DateTimeOffset.UtcNow, stoppingToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                logger.LogWarning(ex, "Retention pass failed; retrying in {Interval}", Interval);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }
}
