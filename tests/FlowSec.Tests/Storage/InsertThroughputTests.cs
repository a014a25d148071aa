using System.Diagnostics;
using System.Globalization;
using FlowSec.Api.V1;
using FlowSec.Relay.Storage;
using Xunit.Abstractions;

namespace FlowSec.Tests.Storage;

/// <summary>
/// Insert throughput per table, measured only on request (it reports figures, it does not judge them).
/// Writer configurations (format, gzip, batch size) run alternately on the same data, so a busy
/// machine weighs on all of them alike. Besides wall-clock rows/s it reports CPU time per row of this
/// process and of clickhouse-server, which stays steadier when other work shares the machine:
/// <c>FLOWSEC_STORAGE_BENCH=1000000 dotnet test tests/FlowSec.Tests -c Release --filter "FullyQualifiedName~InsertThroughput" --logger "console;verbosity=detailed"</c>.
/// </summary>
public sealed class InsertThroughputTests(ClickHouseServer ch, ITestOutputHelper output) : IClassFixture<ClickHouseServer>
{
    /// <summary>The writer configurations compared, the one before issue 4's work first.</summary>
    private static readonly (string Name, int BatchRows, Dictionary<string, string?> Settings)[] Variants =
    [
        ("RowBinary gzip (before)", 50_000, new() { ["InsertFormat"] = "RowBinary", ["CompressInserts"] = "true", ["BatchMaxBytes"] = (32 << 20).ToString(CultureInfo.InvariantCulture) }),
        ("RowBinary plain", 50_000, new() { ["InsertFormat"] = "RowBinary", ["CompressInserts"] = "false" }),
        ("Native gzip", 50_000, new() { ["InsertFormat"] = "Native", ["CompressInserts"] = "true" }),
        ("Native plain unsorted", 50_000, new() { ["InsertFormat"] = "Native", ["SortNativeRows"] = "false" }),
        ("Native plain sorted", 50_000, new() { ["InsertFormat"] = "Native" }),
        ("Native 100k rows", 100_000, new() { ["InsertFormat"] = "Native", ["BatchMaxBytes"] = (64 << 20).ToString(CultureInfo.InvariantCulture) }),
        ("Native 200k rows (default)", new ClickHouseOptions().BatchMaxRows,
            new() { ["InsertFormat"] = "Native", ["BatchMaxBytes"] = new ClickHouseOptions().BatchMaxBytes.ToString(CultureInfo.InvariantCulture) }),
    ];

    [StorageBenchFact]
    public async Task Insert_throughput_per_table()
    {
        var rows = int.Parse(Environment.GetEnvironmentVariable(StorageBenchFactAttribute.Variable)!, CultureInfo.InvariantCulture);
        var rounds = int.TryParse(Environment.GetEnvironmentVariable("FLOWSEC_STORAGE_BENCH_ROUNDS"), CultureInfo.InvariantCulture, out var r) ? r : 2;
        const int poolSize = 10_000;
        output.WriteLine($"{rows:N0} rows per table and run, {rounds} rounds alternating the variants, {Environment.ProcessorCount} cores, client and server on this machine, " +
                         $"load average at start {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
        output.WriteLine("encode = the writer's encoding alone (Native: sorted and written to a null stream), client CPU µs/row");
        output.WriteLine("writer = pipeline → writer → ClickHouse, batches of 500 events; rows/s wall clock (mean of rounds) and CPU µs/row of this process + clickhouse-server (includes merges while it ran)");

        var kinds = new (string Table, Func<int, Event> Make)[]
        {
            ("flows", TestFlows.Flow), ("dns", TestEvents.Dns), ("process_events", i => i % 2 == 0 ? TestEvents.Exec(i) : TestEvents.Exit(i)),
            ("file_events", TestEvents.File),
        };
        foreach (var (tableName, make) in kinds)
        {
            var pool = Enumerable.Range(0, poolSize).Select(make).ToArray();
            var table = EventTables.All.Single(t => t.Name == tableName);

            // Encoding alone, as the writer does it, in batches of 50 k rows.
            var body = new RowBinaryWriter(64 << 20);
            var cpu = CpuClock.Start(ch.Server.ProcessId);
            for (var i = 0; i < rows; i++)
            {
                if (i % 50_000 == 0)
                {
                    body.Clear();
                }

                table.WriteRow(body, pool[i % poolSize], 1);
            }

            var rowBinaryEncode = cpu.PerRow(rows).Client;
            var bytesPerRow = (double)body.Length / (rows % 50_000 == 0 ? 50_000 : rows % 50_000);
            var block = new NativeBlock(table);
            cpu = CpuClock.Start(ch.Server.ProcessId);
            for (var i = 0; i < rows; i++)
            {
                block.Append(pool[i % poolSize], 1);
                if (block.Rows == 50_000 || i == rows - 1)
                {
                    await block.WriteToAsync(Stream.Null, CancellationToken.None);
                    block.Clear();
                }
            }

            var nativeEncode = cpu.PerRow(rows).Client;
            output.WriteLine($"{tableName}: {bytesPerRow:F0} bytes/row RowBinary; encode µs/row: RowBinary {rowBinaryEncode:F2}, Native (sort included) {nativeEncode:F2}");

            var results = Variants.Select(_ => new List<(double Rate, double Client, double Server)>()).ToArray();
            for (var round = 0; round < rounds; round++)
            {
                for (var v = 0; v < Variants.Length; v++)
                {
                    results[v].Add(await WriterRunAsync(Variants[v].BatchRows, Variants[v].Settings, pool, rows));
                }
            }

            for (var v = 0; v < Variants.Length; v++)
            {
                var runs = results[v];
                var (client, server) = (runs.Average(x => x.Client), runs.Average(x => x.Server));
                output.WriteLine($"  {Variants[v].Name,-24} {runs.Average(x => x.Rate),9:N0} rows/s  ({string.Join(", ", runs.Select(x => x.Rate.ToString("N0", CultureInfo.InvariantCulture)))})" +
                                 $"  CPU µs/row {client:F2} + {server:F2} = {client + server:F2}  ({1e6 / (client + server):N0} rows per CPU-second)");
            }
        }
    }

    // End to end: batches of 500 events into the pipeline, the writer encodes and inserts.
    private async Task<(double Rate, double Client, double Server)> WriterRunAsync(int batchRows, Dictionary<string, string?> settings, Event[] pool, int rows)
    {
        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, ClickHouseServer.NewDatabase(), batchMaxRows: batchRows, settings: settings);
        await Eventually.HoldsAsync(() => relay.Writer.SchemaReady, TimeSpan.FromSeconds(30), () => "schema");
        var cpu = CpuClock.Start(ch.Server.ProcessId);
        var clock = Stopwatch.StartNew();
        for (var sent = 0; sent < rows; sent += 500)
        {
            var batch = new EventBatch();
            for (var i = sent; i < Math.Min(rows, sent + 500); i++)
            {
                batch.Events.Add(pool[i % pool.Length]);
            }

            await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
        }

        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == rows, TimeSpan.FromMinutes(10), () => $"stored {relay.Writer.EventsStored}");
        var rate = rows / clock.Elapsed.TotalSeconds;
        var perRow = cpu.PerRow(rows);
        relay.Writer.InsertErrors.Should().Be(0);
        return (rate, perRow.Client, perRow.Server);
    }

    [StorageBenchFact]
    public async Task Ingest_cost_of_looking_up_resent_batches()
    {
        // What IngestService adds for a batch marked re-sent: StoredBatches.TablesHoldingAsync before
        // the publish (fresh batches skip it). Flows in sensor-sized batches (BatchMaxEvents 4096, and
        // the 50 ms batches a quiet node sends).
        var rows = int.Parse(Environment.GetEnvironmentVariable(StorageBenchFactAttribute.Variable)!, CultureInfo.InvariantCulture);
        var pool = Enumerable.Range(0, 10_000).Select(TestFlows.Flow).ToArray();
        output.WriteLine($"{rows:N0} flows per run; rows/s wall clock and CPU µs/row (client + server), client and server on this machine");
        output.WriteLine("batch events  fresh rows/s (µs/row)       re-sent, not stored yet         re-sent, all stored already (skipped)");
        foreach (var batchEvents in new[] { 4096, 200 })
        {
            var line = $"{batchEvents,12}";
            await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, ClickHouseServer.NewDatabase(), batchMaxRows: 50_000);
            await Eventually.HoldsAsync(() => relay.Writer.SchemaReady, TimeSpan.FromSeconds(30), () => "schema");
            var ledger = relay.Ledger;
            var firstId = 1UL;
            foreach (var (resent, storedBefore) in new[] { (false, false), (true, false), (true, true) })
            {
                var ids = storedBefore ? firstId - (ulong)((rows + batchEvents - 1) / batchEvents) : firstId;
                var storedAtStart = relay.Writer.EventsStored;
                var cpu = CpuClock.Start(ch.Server.ProcessId);
                var clock = Stopwatch.StartNew();
                var skipped = 0;
                for (var sent = 0; sent < rows; sent += batchEvents, ids++)
                {
                    var batch = new EventBatch { Node = "bench", BatchId = ids, Resent = resent };
                    for (var i = sent; i < Math.Min(rows, sent + batchEvents); i++)
                    {
                        var e = pool[i % pool.Length].Clone();
                        e.Node = "bench";
                        e.TimeUnixNano += (ulong)i; // distinct events
                        batch.Events.Add(e);
                    }

                    if (resent && (await ledger.TablesHoldingAsync(batch, CancellationToken.None)).Count > 0)
                    {
                        skipped += batch.Events.Count;
                        continue;
                    }

                    await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
                }

                await Eventually.HoldsAsync(() => relay.Writer.EventsStored - storedAtStart == rows - skipped, TimeSpan.FromMinutes(10), () => $"stored {relay.Writer.EventsStored}");
                var rate = rows / clock.Elapsed.TotalSeconds;
                var perRow = cpu.PerRow(rows);
                skipped.Should().Be(storedBefore ? rows : 0);
                line += $"  {rate,10:N0} ({perRow.Client:F2} + {perRow.Server:F2})";
                firstId = ids;
            }

            output.WriteLine(line);
        }
    }
}

/// <summary>CPU time of this process and of another one (from /proc), between a start and now.</summary>
internal readonly record struct CpuClock(int ServerPid, TimeSpan Client, TimeSpan Server)
{
    public static CpuClock Start(int serverPid) => new(serverPid, Process.GetCurrentProcess().TotalProcessorTime, ProcessCpu(serverPid));

    /// <summary>Microseconds of CPU per row since <see cref="Start"/>: this process, the server.</summary>
    public (double Client, double Server) PerRow(int rows) =>
        ((Process.GetCurrentProcess().TotalProcessorTime - Client).TotalMicroseconds / rows, (ProcessCpu(ServerPid) - Server).TotalMicroseconds / rows);

    // utime + stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second here).
    private static TimeSpan ProcessCpu(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return TimeSpan.FromSeconds(ticks / 100.0);
    }
}

/// <summary>A fact that runs only when <see cref="Variable"/> holds the number of rows per table to measure with.</summary>
public sealed class StorageBenchFactAttribute : FactAttribute
{
    /// <summary>The environment variable that enables the measurement.</summary>
    public const string Variable = "FLOWSEC_STORAGE_BENCH";

    /// <summary>Skips unless <see cref="Variable"/> is set.</summary>
    public StorageBenchFactAttribute()
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable(Variable), CultureInfo.InvariantCulture, out var rows) || rows <= 0)
        {
            Skip = $"a measurement: set {Variable}=ROWS to run it";
        }
    }
}
