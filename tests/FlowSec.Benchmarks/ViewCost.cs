using System.Diagnostics;
using System.Globalization;
using FlowSec.Cli.Up;
using FlowSec.Relay.Storage;

namespace FlowSec.Benchmarks;

/// <summary>
/// What the tables derived from flows cost clickhouse-server per stored flow, measured on the server
/// alone (no relay): the ingest bench's flows are loaded once into Memory tables of one insert each,
/// then, for each set of materialized views on <c>flows</c>, into a fresh database by
/// <c>INSERT … SELECT</c> one insert at a time, and the server's CPU is read from /proc until its
/// merges have settled. The sets run alternately, round after round, so a change in the machine's
/// load hits them alike.
/// </summary>
internal static class ViewCost
{
    // Each set: a name and the statements (arguments: database) that create its tables and views.
    private static readonly (string Name, Func<string, string[]> Create)[] Sets =
    [
        ("no views", _ => []),
        ("source summary", db => [.. Create(FlowSummary.Sources, db)]),
        ("source summary + per-flow port index (schema 8)", db =>
        [
            .. Create(FlowSummary.Sources, db),
            // The per-flow index exactly as schema version 8 created it.
            $"CREATE TABLE {db}.flows_by_dst_port (`dst_port` UInt16, `time` DateTime('UTC'), `time_ns` UInt64) " +
            "ENGINE = MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (dst_port, toStartOfHour(time), time_ns)",
            $"CREATE MATERIALIZED VIEW {db}.flows_by_dst_port_mv TO {db}.flows_by_dst_port AS SELECT `dst_port`, time, time_ns FROM {db}.flows",
        ]),
        ("source summary + per-minute port counts (schema 10)", db => [.. Create(FlowSummary.Sources, db), .. Create(FlowSummary.DestinationPortMinutes, db)]),
    ];

    /// <summary>Runs <paramref name="rounds"/> rounds of <paramref name="inserts"/> inserts of <paramref name="rowsPerInsert"/> flows into each set.</summary>
    public static async Task RunAsync(int rowsPerInsert, int inserts, int rounds)
    {
        var dir = Directory.CreateTempSubdirectory("flowsec-view-bench-").FullName;
        try
        {
            await using var server = await ManagedClickHouse.StartAsync(dir, QueryBenchmark.FreePort(), QueryBenchmark.FreePort(), CancellationToken.None);
            var options = new ClickHouseOptions { Url = server.Url, Database = "src", RequestTimeout = TimeSpan.FromMinutes(10) };
            using var client = new ClickHouseHttpClient(options);
            Console.WriteLine($"views: {inserts} inserts of {rowsPerInsert:N0} flows per set and round, {rounds} rounds, load average {QueryBenchmark.LoadAverage()}");

            // As the ingest bench's relay gets them: 64 distinct batches of 4,096 flows (the day's flows
            // in order, so a batch spans about 22 minutes), each insert drawn from them at random, each
            // batch from one of 4 nodes; each insert's rows in the flows table's sort order, as the
            // relay sends them.
            await client.ExecuteAsync("CREATE DATABASE src");
            await client.ExecuteAsync(FlowTable.Table.CreateSql("src", lowCardinality: false));
            await client.ExecuteAsync("CREATE TABLE src.staging AS src.flows ENGINE = Memory");
            const int batch = 4096, distinct = 64 * batch;
            var random = new Random(distinct);
            var flows = Enumerable.Range(0, distinct).Select(i => QueryBenchmark.Flow(i, distinct, random)).ToArray();
            var writer = new RowBinaryWriter(64 * 1024 * 1024);
            for (var i = 0; i < inserts; i++)
            {
                await client.ExecuteAsync("TRUNCATE TABLE src.staging");
                writer.Clear();
                for (var r = 0; r < rowsPerInsert; r += batch)
                {
                    var first = random.Next(distinct / batch) * batch;
                    var node = "bench-node-" + random.Next(4).ToString(CultureInfo.InvariantCulture);
                    foreach (var e in flows.AsSpan(first, Math.Min(batch, rowsPerInsert - r)))
                    {
                        e.Node = node;
                        FlowTable.Table.WriteRow(writer, e);
                    }
                }
                await client.InsertRowBinaryAsync("src.staging", FlowTable.Table.ColumnNames, writer.WrittenMemory);
                await client.ExecuteAsync($"CREATE TABLE src.insert{i} ENGINE = Memory AS SELECT * FROM src.staging " +
                                          "ORDER BY toStartOfHour(time), src_namespace, src_pod, src_ip, dst_ip, time_ns");
            }

            var results = Sets.ToDictionary(s => s.Name, _ => new List<(double Inserts, double Merges)>());
            for (var round = 0; round < rounds; round++)
            {
                foreach (var (name, create) in Sets)
                {
                    var db = $"r{round}_{Array.FindIndex(Sets, s => s.Name == name)}";
                    await client.ExecuteAsync($"CREATE DATABASE {db}");
                    await client.ExecuteAsync(FlowTable.Table.CreateSql(db, lowCardinality: false));
                    foreach (var statement in create(db))
                    {
                        await client.ExecuteAsync(statement);
                    }
                    await SettleAsync(client, server.ProcessId);

                    var merged0 = await MergedAsync(client);
                    var (cpu0, merge0) = (CpuSeconds(server.ProcessId), MergeCpuSeconds(server.ProcessId));
                    for (var i = 0; i < inserts; i++)
                    {
                        await client.ExecuteAsync($"INSERT INTO {db}.flows SELECT * FROM src.insert{i}");
                    }
                    await SettleAsync(client, server.ProcessId);
                    var (cpu, merge) = (CpuSeconds(server.ProcessId) - cpu0, MergeCpuSeconds(server.ProcessId) - merge0);
                    var rows = (double)inserts * rowsPerInsert;
                    var merged = await MergedAsync(client);
                    results[name].Add(((cpu - merge) / rows * 1e6, merge / rows * 1e6));
                    Console.WriteLine($"  round {round + 1} {name}: server {cpu / rows * 1e6:0.00} µs/row (inserts {(cpu - merge) / rows * 1e6:0.00}, merges {merge / rows * 1e6:0.00}); " +
                                      $"merged {(merged.Rows - merged0.Rows) / rows:0.00} rows and {(merged.Bytes - merged0.Bytes) / rows:0} bytes a flow; parts {await PartsAsync(client, db)}; load {QueryBenchmark.LoadAverage()}");
                    await client.ExecuteAsync($"DROP DATABASE {db}");
                }
            }

            Console.WriteLine("  mean over rounds, server CPU µs per flow (inserts incl. the views they fill + background merges):");
            foreach (var (name, list) in results)
            {
                Console.WriteLine($"    {name,-52} {list.Average(r => r.Inserts + r.Merges),5:0.00} = {list.Average(r => r.Inserts),4:0.00} + {list.Average(r => r.Merges),4:0.00}   " +
                                  $"(totals {string.Join(" ", list.Select(r => (r.Inserts + r.Merges).ToString("0.00", CultureInfo.InvariantCulture)))})");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static IEnumerable<string> Create(FlowSummary derived, string db) =>
        [derived.CreateSql(db, lowCardinality: false), derived.CreateViewSql(db)];

    // Until no merge has run and the server's CPU has hardly moved for 12 s: merges it schedules after
    // the inserts (and the removal of the parts they replaced) are part of what the inserts cost, and
    // 18.16's background pool may sleep up to about 10 s before it looks for merges to do.
    private static async Task SettleAsync(ClickHouseHttpClient client, int pid)
    {
        var watch = Stopwatch.StartNew();
        var last = CpuSeconds(pid);
        var quiet = 0;
        while (watch.Elapsed < TimeSpan.FromMinutes(5) && quiet < 12)
        {
            await Task.Delay(1000);
            var now = CpuSeconds(pid);
            quiet = (await client.QueryTextAsync("SELECT count() FROM system.merges")).Trim() == "0" && now - last < 0.03 ? quiet + 1 : 0;
            last = now;
        }
    }

    // Rows and uncompressed bytes the server's merges have read since it started (every table).
    private static async Task<(double Rows, double Bytes)> MergedAsync(ClickHouseHttpClient client)
    {
        var text = await client.QueryTextAsync("SELECT sumIf(value, event = 'MergedRows'), sumIf(value, event = 'MergedUncompressedBytes') FROM system.events FORMAT TabSeparated");
        var parts = text.Trim().Split('\t');
        return (double.Parse(parts[0], CultureInfo.InvariantCulture), double.Parse(parts[1], CultureInfo.InvariantCulture));
    }

    private static async Task<string> PartsAsync(ClickHouseHttpClient client, string db) =>
        (await client.QueryTextAsync($"SELECT concat(table, ' ', toString(count()), ' (', toString(sum(rows)), ' rows)') FROM system.parts WHERE active AND database = '{db}' GROUP BY table ORDER BY table FORMAT TabSeparated"))
        .Replace("\n", ", ", StringComparison.Ordinal).TrimEnd(',', ' ');

    private static double CpuSeconds(int pid) => IngestThroughput.CpuSeconds(pid);

    private static double MergeCpuSeconds(int pid) => IngestThroughput.MergeCpuSeconds(pid);
}
