using System.Diagnostics;
using System.Globalization;
using System.Net;
using FlowSec.Api.Filters;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;
using FlowSec.Relay.Storage;
using Google.Protobuf;

namespace FlowSec.Benchmarks;

/// <summary>
/// Issue 4's query benchmark: loads synthetic but realistic flows (2,000 pods in 50 namespaces,
/// Zipf-skewed talkers and services, a day of timestamps, 2 % dropped with reasons) plus one DNS
/// lookup per ten flows into a ClickHouse it starts, through the relay's RowBinary path, then times
/// the five incident queries through the relay's query code (ClickHouseEventStore, the code behind
/// GetEvents and Aggregate, minus the gRPC hop).
/// </summary>
internal static class QueryBenchmark
{
    private const int Namespaces = 50;
    private const int PodsPerNamespace = 40;
    private const int BatchRows = 100_000;
    private static readonly DateTimeOffset Day = new(2026, 11, 22, 0, 0, 0, TimeSpan.Zero);

    /// <summary>The schema version of the release before the flow summary and the port counts (versions 8 and 9).</summary>
    private const int SchemaBeforeSummaries = 7;
    private static readonly uint[] ServicePorts = [443, 80, 8080, 5432, 6379, 9090, 3306, 27017, 11211, 53];
    private static readonly string[] DropReasons = ["policy", "no_socket", "tcp_invalid", "netfilter", "pkt_too_small"];
    private static readonly string[] Names = ["api", "db", "cache", "auth", "search", "payments", "queue", "static", "metrics", "users"];

    public static async Task RunAsync(int rows, int repeats)
    {
        var dir = Directory.CreateTempSubdirectory("flowsec-query-bench-").FullName;
        try
        {
            await using var server = await ManagedClickHouse.StartAsync(dir, FreePort(), FreePort(), CancellationToken.None);
            var options = new ClickHouseOptions { Url = server.Url, Database = "bench", RequestTimeout = TimeSpan.FromMinutes(10) };
            using var client = new ClickHouseHttpClient(options);
            // The release before the summaries first: most flows load without the views (as an
            // existing database holds them), the upgrade backfills, the rest load through the views.
            var schema = new ClickHouseSchema(client, options);
            await schema.EnsureAsync(SchemaBeforeSummaries, CancellationToken.None);
            Console.WriteLine($"query benchmark: {rows:N0} flows + {rows / 10:N0} DNS lookups, {repeats} repeats, load average {LoadAverage()}");

            var random = new Random(rows);
            var before = rows - rows / 10;
            var load = Stopwatch.StartNew();
            await LoadAsync(client, options.Database, FlowTable.Table, 0, before, rows, FlowWithName, random);
            var flowSeconds = load.Elapsed.TotalSeconds;
            await WaitForMergesAsync(client);
            load.Restart();
            await schema.EnsureAsync();
            var backfillSeconds = load.Elapsed.TotalSeconds;
            load.Restart();
            await LoadAsync(client, options.Database, FlowTable.Table, before, rows, rows, FlowWithName, random);
            var viewSeconds = load.Elapsed.TotalSeconds;
            load.Restart();
            await LoadAsync(client, options.Database, DnsTable.Table, 0, rows / 10, rows / 10, Dns, new Random(rows / 10));
            var dnsSeconds = load.Elapsed.TotalSeconds;
            Console.WriteLine($"  load: flows without views {before / flowSeconds:N0} rows/s ({flowSeconds:0.0} s), with the views {(rows - before) / viewSeconds:N0} rows/s ({viewSeconds:0.0} s), " +
                              $"dns {rows / 10 / dnsSeconds:N0} rows/s ({dnsSeconds:0.0} s) — encode + gzip + INSERT, one client thread; upgrade with backfill of {before:N0} flows {backfillSeconds:0.0} s");
            await WaitForMergesAsync(client);
            Console.WriteLine($"  parts after merges: {(await client.QueryTextAsync("SELECT table, count() FROM system.parts WHERE active AND database = 'bench' GROUP BY table ORDER BY table FORMAT TabSeparated")).Replace('\n', ' ').Trim()}");
            Console.WriteLine($"  rows: {(await client.QueryTextAsync("SELECT table, sum(rows) FROM system.parts WHERE active AND database = 'bench' GROUP BY table ORDER BY table FORMAT TabSeparated")).Replace('\n', ' ').Trim()}");

            var raw = new ClickHouseEventStore(client, new ClickHouseOptions { Url = options.Url, Database = options.Database, RequestTimeout = options.RequestTimeout, UseFlowSummaries = false });
            var summaries = new ClickHouseEventStore(client, options);
            var busy = Pod(Zipf(0.2)); // the 4th busiest talker
            var windowStart = Day.AddHours(14);
            var queries = new (string Name, Func<ClickHouseEventStore, Task<int>> Run)[]
            {
                ($"peers of {busy} 14:00–14:15 (group by destination.pod,destination.port)", store => Aggregate(store, EventType.Flow,
                    new EventQuery(windowStart, windowStart.AddMinutes(15), Filter: Filter(new EventFilter { SourcePod = { busy } })),
                    ["destination.pod", "destination.port"], 100)),
                ("top talkers, whole day (group by source.pod, sort bytes, top 10)", store => Aggregate(store, EventType.Flow,
                    new EventQuery(Day, Day.AddDays(1)), ["source.pod"], 10, sortByBytes: true)),
                ("flows to port 5432, whole day (newest 1,000 rows, every column)", async store => (await store.QueryAsync(
                    new EventQuery(Day, Day.AddDays(1), 1000, Filter(new EventFilter { DestinationPort = { 5432 } })), [EventType.Flow])).Count),
                ("dropped flows by reason, whole day (group by drop_reason)", store => Aggregate(store, EventType.Flow,
                    new EventQuery(Day, Day.AddDays(1), Filter: Filter(new EventFilter { Verdict = { Verdict.Dropped } })), ["drop_reason"], 100)),
                ($"DNS names resolved by {busy}, whole day (group by dns.query)", store => Aggregate(store, EventType.Dns,
                    new EventQuery(Day, Day.AddDays(1), Filter: Filter(new EventFilter { SourcePod = { busy } })), ["dns.query"], 1000)),
                ("top talkers 09:10–17:50 (whole hours from the summary, the ends from flows)", store => Aggregate(store, EventType.Flow,
                    new EventQuery(Day.AddHours(9).AddMinutes(10), Day.AddHours(17).AddMinutes(50)), ["source.pod"], 10, sortByBytes: true)),
                ("flows of pods labelled app=payments 14:00–14:15 (newest 1,000 rows, every column)", async store => (await store.QueryAsync(
                    new EventQuery(windowStart, windowStart.AddMinutes(15), 1000, Filter(new EventFilter { Label = { "app=payments" } })), [EventType.Flow])).Count),
                ("flows of pods labelled app=payments, whole day (group by source.pod)", store => Aggregate(store, EventType.Flow,
                    new EventQuery(Day, Day.AddDays(1), Filter: Filter(new EventFilter { Label = { "app=payments" } })), ["source.pod"], 100)),
                ("flows to db.ns-1.svc.cluster.local 14:00–14:15 (newest 1,000 rows, every column)", async store => (await store.QueryAsync(
                    new EventQuery(windowStart, windowStart.AddMinutes(15), 1000, Filter(new EventFilter { DnsName = { "db.ns-1.svc.cluster.local" } })), [EventType.Flow])).Count),
                ("flows to *.ns-3.svc.cluster.local, whole day (group by source.pod)", store => Aggregate(store, EventType.Flow,
                    new EventQuery(Day, Day.AddDays(1), Filter: Filter(new EventFilter { DnsName = { "*.ns-3.svc.cluster.local" } })), ["source.pod"], 100)),
            };
            foreach (var (name, run) in queries)
            {
                // Flows table only (as before the summaries), then with the summaries and the port index.
                foreach (var (label, store) in new[] { ("flows only", raw), ("summaries", summaries) })
                {
                    var results = await run(store); // warm-up: marks and columns into the page cache, as on a server in use
                    var times = new List<double>();
                    for (var i = 0; i < repeats; i++)
                    {
                        var watch = Stopwatch.StartNew();
                        await run(store);
                        times.Add(watch.Elapsed.TotalMilliseconds);
                    }
                    Console.WriteLine($"  {name} [{label}]: median {EndToEndLatency.Percentile(times, 50):0} ms, p90 {EndToEndLatency.Percentile(times, 90):0} ms ({results} rows), load {LoadAverage()}");
                }
            }
            Console.WriteLine($"  load average after: {LoadAverage()}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static async Task<int> Aggregate(ClickHouseEventStore store, EventType type, EventQuery window, string[] fields, int top, bool sortByBytes = false) =>
        (await store.AggregateAsync(new AggregateQuery(window, fields.Select(GroupByField.Parse).ToArray(), top, sortByBytes), [type])).Count;

    private static EventFilterMatcher Filter(EventFilter f) => new([f], []);

    // Rows in time order (as sensors deliver them), encoded by the table's own writer, one INSERT per batch.
    // Rows from..to of rows in all (their times spread over the day by index).
    private static async Task LoadAsync(ClickHouseHttpClient client, string database, EventTable table, int from, int to, int rows, Func<int, int, Random, Event> make, Random random)
    {
        var writer = new RowBinaryWriter(64 * 1024 * 1024);
        for (var start = from; start < to; start += BatchRows)
        {
            writer.Clear();
            var count = Math.Min(BatchRows, to - start);
            for (var i = 0; i < count; i++)
            {
                table.WriteRow(writer, make(start + i, rows, random));
            }
            await client.InsertRowBinaryAsync($"{database}.{table.Name}", table.ColumnNames, writer.WrittenMemory);
        }
    }

    /// <summary>Flow <paramref name="i"/> of <paramref name="rows"/>, its time spread over the day (also the encode bench's rows).</summary>
    internal static Event Flow(int i, int rows, Random random)
    {
        var src = Zipf(random.NextDouble());
        var dst = Zipf(random.NextDouble());
        var port = ServicePorts[Zipf(random.NextDouble()) % ServicePorts.Length];
        var dropped = random.Next(50) == 0;
        var tcp = port != 53;
        return new Event
        {
            TimeUnixNano = Time(i, rows, random),
            Node = $"node-{src % 20}",
            Type = EventType.Flow,
            Capture = "bpf",
            Source = Endpoint(src, (uint)random.Next(32768, 61000), random),
            Destination = Endpoint(dst, port, random),
            Flow = new Flow
            {
                Protocol = tcp ? Protocol.Tcp : Protocol.Udp,
                State = dropped ? "refused" : "closed",
                DurationNs = (ulong)random.Next(1_000_000, 2_000_000_000),
                Direction = "egress",
                Verdict = dropped ? Verdict.Dropped : Verdict.Forwarded,
                DropReason = dropped ? DropReasons[Zipf(random.NextDouble()) % DropReasons.Length] : "",
                BytesSent = (ulong)Math.Exp(4 + random.NextDouble() * 10),
                BytesReceived = (ulong)Math.Exp(5 + random.NextDouble() * 11),
                PacketsSent = (ulong)random.Next(1, 200),
                PacketsReceived = (ulong)random.Next(1, 400),
                RttUs = (uint)random.Next(20, 5000),
                Retransmits = (uint)(random.Next(20) == 0 ? random.Next(1, 5) : 0),
                SocketId = (ulong)i,
            },
        };
    }

    // A flow whose destination carries the service name its client resolved (the sensor's DNS names),
    // for the DNS-name queries; only this benchmark's rows, so the ingest and encode rows stay as they were.
    private static Event FlowWithName(int i, int rows, Random random)
    {
        var e = Flow(i, rows, random);
        e.Destination.Names.Add($"{e.Destination.Process}.{e.Destination.Namespace}.svc.cluster.local");
        return e;
    }

    private static Event Dns(int i, int rows, Random random)
    {
        var src = Zipf(random.NextDouble());
        var name = $"{Names[Zipf(random.NextDouble()) % Names.Length]}.{NamespaceOf(Zipf(random.NextDouble()))}.svc.cluster.local";
        return new Event
        {
            TimeUnixNano = Time(i, rows, random),
            Node = $"node-{src % 20}",
            Type = EventType.Dns,
            Capture = "bpf",
            Source = Endpoint(src, (uint)random.Next(32768, 61000), random),
            Destination = new Endpoint { Ip = ByteString.CopyFrom(IPAddress.Parse("10.96.0.10").GetAddressBytes()), Port = 53, Pod = "coredns-0", Namespace = "kube-system" },
            Dns = new DnsLookup
            {
                Query = name,
                Qtype = random.Next(3) == 0 ? "AAAA" : "A",
                Rcode = random.Next(30) == 0 ? "NXDOMAIN" : "NOERROR",
                Answers = { new DnsAnswer { Name = name, Type = "A", Data = $"10.{random.Next(256)}.{random.Next(256)}.{random.Next(256)}", Ttl = 30 } },
                LatencyUs = (ulong)random.Next(50, 5000),
                IsResponse = true,
            },
        };
    }

    private static Endpoint Endpoint(int pod, uint port, Random random) => new()
    {
        Ip = ByteString.CopyFrom([10, (byte)(pod / 250), (byte)(pod % 250), (byte)(1 + random.Next(3))]),
        Port = port,
        Pid = (uint)(1000 + pod),
        Process = Names[pod % Names.Length],
        Workload = $"{Names[pod % Names.Length]}-{pod / Names.Length}",
        Pod = PodName(pod),
        Namespace = NamespaceOf(pod),
        Labels = { ["app"] = Names[pod % Names.Length] },
    };

    // Spread evenly over the day, a little jitter, still nearly in order.
    private static ulong Time(int i, int rows, Random random) =>
        (ulong)Day.ToUnixTimeMilliseconds() * 1_000_000 + (ulong)((double)i / rows * 86_400e9) + (ulong)random.Next(1_000_000);

    // Zipf-like rank of u in 0..pods-1: rank r has weight 1/(r+1) (inverse of the harmonic CDF, approximated).
    private static int Zipf(double u)
    {
        const int pods = Namespaces * PodsPerNamespace;
        var rank = (int)Math.Exp(u * Math.Log(pods + 1)) - 1;
        return Math.Clamp(rank, 0, pods - 1);
    }

    private static string NamespaceOf(int pod) => $"ns-{pod % Namespaces}";

    private static string PodName(int pod) => $"{Names[pod % Names.Length]}-{pod / Namespaces}";

    private static string Pod(int pod) => $"{NamespaceOf(pod)}/{PodName(pod)}";

    private static async Task WaitForMergesAsync(ClickHouseHttpClient client)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromMinutes(3) &&
               (await client.QueryTextAsync("SELECT count() FROM system.merges")).Trim() != "0")
        {
            await Task.Delay(500);
        }
    }

    /// <summary>The 1, 5 and 15 minute load averages.</summary>
    internal static string LoadAverage() => File.ReadAllText("/proc/loadavg").Split(' ')[..3] is var l ? string.Join(' ', l) : "";

    /// <summary>A loopback TCP port nothing listens on now.</summary>
    internal static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
