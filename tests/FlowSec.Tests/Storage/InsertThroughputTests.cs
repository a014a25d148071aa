using System.Diagnostics;
using System.Globalization;
using FlowSec.Api.V1;
using FlowSec.Relay.Storage;
using Xunit.Abstractions;

namespace FlowSec.Tests.Storage;

/// <summary>
/// Insert throughput per table, measured only on request (it reports figures, it does not judge them).
/// Besides wall-clock rows/s it reports CPU time per row of this process and of clickhouse-server,
/// which stays meaningful when other work shares the machine:
/// <c>FLOWSEC_STORAGE_BENCH=1000000 dotnet test tests/FlowSec.Tests -c Release --filter "FullyQualifiedName~InsertThroughput" --logger "console;verbosity=detailed"</c>.
/// </summary>
public sealed class InsertThroughputTests(ClickHouseServer ch, ITestOutputHelper output) : IClassFixture<ClickHouseServer>
{
    [StorageBenchFact]
    public async Task Insert_throughput_per_table()
    {
        var rows = int.Parse(Environment.GetEnvironmentVariable(StorageBenchFactAttribute.Variable)!, CultureInfo.InvariantCulture);
        const int poolSize = 10_000;
        const int batchRows = 50_000;
        output.WriteLine($"{rows:N0} rows per table, batches of {batchRows:N0}, {Environment.ProcessorCount} cores, client and server on this machine");
        output.WriteLine("insert = pre-encoded batches via the HTTP client (gzip, HTTP, server); writer = pipeline → writer → ClickHouse (encode included)");
        output.WriteLine("CPU µs/row = this process + clickhouse-server; per core = rows/s one fully busy core would carry");
        output.WriteLine("table           bytes/row  encode rows/s | insert rows/s  CPU µs/row (client+server)  per core | writer rows/s  CPU µs/row (client+server)  per core");

        var kinds = new (string Table, Func<int, Event> Make)[]
        {
            ("flows", TestFlows.Flow), ("dns", TestEvents.Dns), ("process_events", i => i % 2 == 0 ? TestEvents.Exec(i) : TestEvents.Exit(i)),
            ("file_events", TestEvents.File),
        };
        foreach (var (tableName, make) in kinds)
        {
            var pool = Enumerable.Range(0, poolSize).Select(make).ToArray();
            var table = EventTables.All.Single(t => t.Name == tableName);

            // Encoding alone, as the writer does it.
            var body = new RowBinaryWriter(64 << 20);
            var clock = Stopwatch.StartNew();
            for (var i = 0; i < rows; i++)
            {
                if (i % batchRows == 0)
                {
                    body.Clear();
                }

                table.WriteRow(body, pool[i % poolSize]);
            }

            var encodeRate = rows / clock.Elapsed.TotalSeconds;

            // Pre-encoded batches through the HTTP client: gzip, transfer, server-side parse and merge-tree write.
            var db = ClickHouseServer.NewDatabase();
            await new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync();
            body.Clear();
            for (var i = 0; i < batchRows; i++)
            {
                table.WriteRow(body, pool[i % poolSize]);
            }

            var bytesPerRow = (double)body.Length / batchRows;
            var cpu = CpuClock.Start(ch.Server.ProcessId);
            clock.Restart();
            for (var sent = 0; sent < rows; sent += batchRows)
            {
                await ch.Client.InsertRowBinaryAsync($"{db}.{table.Name}", table.ColumnNames, body.WrittenMemory);
            }

            var insertRate = rows / clock.Elapsed.TotalSeconds;
            var insertCpu = cpu.PerRow(rows);

            // End to end: batches of 500 events into the pipeline, the writer encodes and inserts.
            await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, ClickHouseServer.NewDatabase(), batchMaxRows: batchRows);
            await Eventually.HoldsAsync(() => relay.Writer.SchemaReady, TimeSpan.FromSeconds(30), () => "schema");
            cpu = CpuClock.Start(ch.Server.ProcessId);
            clock.Restart();
            for (var sent = 0; sent < rows; sent += 500)
            {
                var batch = new EventBatch();
                for (var i = sent; i < Math.Min(rows, sent + 500); i++)
                {
                    batch.Events.Add(pool[i % poolSize]);
                }

                await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
            }

            await Eventually.HoldsAsync(() => relay.Writer.EventsStored == rows, TimeSpan.FromMinutes(10), () => $"stored {relay.Writer.EventsStored}");
            var writerRate = rows / clock.Elapsed.TotalSeconds;
            var writerCpu = cpu.PerRow(rows);
            relay.Writer.InsertErrors.Should().Be(0);

            output.WriteLine($"{tableName,-15} {bytesPerRow,9:F0} {encodeRate,14:N0} | {insertRate,13:N0} {insertCpu.Client,13:F2} + {insertCpu.Server,5:F2} {1e6 / (insertCpu.Client + insertCpu.Server),15:N0} |" +
                             $" {writerRate,13:N0} {writerCpu.Client,13:F2} + {writerCpu.Server,5:F2} {1e6 / (writerCpu.Client + writerCpu.Server),15:N0}");
        }
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
