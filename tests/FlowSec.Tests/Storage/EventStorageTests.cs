using System.Text;
using FlowSec.Api.V1;
using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>
/// DNS, process and file events through the real pipeline, the writer and ClickHouse, read back by
/// our query (all fields equal, types merged in time order) and by the real clickhouse-client.
/// </summary>
public sealed class EventStorageTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Every_event_type_round_trips_through_the_writer_and_the_query()
    {
        const int count = 400;
        var events = TestEvents.Mixed(count); // 5 types × 400, interleaved
        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, ClickHouseServer.NewDatabase(), batchMaxRows: 150);

        await PublishAsync(relay, events, chunk: 97);
        await WaitStoredAsync(relay, events.Count);
        relay.Writer.InsertErrors.Should().Be(0);
        relay.Writer.EventsNotStored.Should().Be(0);

        foreach (var type in new[] { EventType.Flow, EventType.Dns, EventType.Exec, EventType.Exit, EventType.File })
        {
            var expected = events.Where(e => e.Type == type).ToList();
            var read = await relay.Store.QueryAsync(new EventQuery(), [type]);
            read.Select(e => e.ToString()).Should().Equal(expected.Select(e => e.ToString()), $"{type} events read back");
            read.Should().Equal(expected);
        }

        var process = await relay.Store.QueryAsync(new EventQuery(), [EventType.Exit, EventType.Exec]);
        process.Should().Equal(events.Where(e => e.Type is EventType.Exec or EventType.Exit));
        (await relay.Store.QueryAsync(new EventQuery())).Should().Equal(events, "all types, merged in time order");
        (await relay.Store.QueryFlowsAsync(new EventQuery())).Should().Equal(events.Where(e => e.Type == EventType.Flow));
    }

    [Fact]
    public async Task A_mixed_query_returns_the_newest_events_of_all_requested_types_oldest_first()
    {
        var events = TestEvents.Mixed(100);
        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, ClickHouseServer.NewDatabase());
        await PublishAsync(relay, events.AsEnumerable().Reverse().ToList(), chunk: 33); // stored out of order on purpose
        await WaitStoredAsync(relay, events.Count);

        var since = At(events[50].TimeUnixNano);
        var until = At(events[400].TimeUnixNano);
        bool InWindow(Event e) => e.TimeUnixNano >= Ns(since) && e.TimeUnixNano < Ns(until);

        var all = await relay.Store.QueryAsync(new EventQuery(since, until), []);
        var newest = await relay.Store.QueryAsync(new EventQuery(since, until, Limit: 17), []);
        var dnsAndFile = await relay.Store.QueryAsync(new EventQuery(since, until, Limit: 25), [EventType.File, EventType.Dns]);
        var execOnly = await relay.Store.QueryAsync(new EventQuery(Limit: 4), [EventType.Exec]);
        var last3 = await relay.Store.QueryAsync(new EventQuery(Limit: 3));
        var streamed = new List<Event>();
        await foreach (var e in relay.Store.StreamAsync(new EventQuery(since, until), [EventType.Exit, EventType.Flow]))
        {
            streamed.Add(e);
        }

        all.Should().Equal(events.Where(InWindow));
        all.Select(e => e.TimeUnixNano).Should().BeInAscendingOrder();
        newest.Should().Equal(events.Where(InWindow).TakeLast(17));
        dnsAndFile.Should().Equal(events.Where(e => InWindow(e) && e.Type is EventType.Dns or EventType.File).TakeLast(25));
        execOnly.Should().Equal(events.Where(e => e.Type == EventType.Exec).TakeLast(4));
        last3.Should().Equal(events.TakeLast(3));
        streamed.Should().Equal(events.Where(e => InWindow(e) && e.Type is EventType.Exit or EventType.Flow));

        var unknown = () => relay.Store.QueryAsync(new EventQuery(), [EventType.Unspecified]);
        await unknown.Should().ThrowAsync<ArgumentException>().WithMessage("*not stored*");
        var badLimit = () => relay.Store.QueryAsync(new EventQuery(Limit: -1), []);
        await badLimit.Should().ThrowAsync<ArgumentOutOfRangeException>();
    }

    [Fact]
    public async Task The_real_client_reads_what_the_writer_inserted_into_each_new_table()
    {
        var db = ClickHouseServer.NewDatabase();
        var events = TestEvents.Mixed(60);
        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, db);
        await PublishAsync(relay, events, chunk: 1000);
        await WaitStoredAsync(relay, events.Count);

        var dns = events.Where(e => e.Type == EventType.Dns).ToList();
        (await Lines($"SELECT time_ns, IPv6NumToString(src_ip), src_port, src_pod, src_namespace, IPv6NumToString(dst_ip), dst_port, dst_workload, " +
                     "hex(query), qtype, rcode, arrayMap(x -> hex(x), answers.name), answers.type, answers.data, answers.ttl, latency_us, id, is_response " +
                     $"FROM {db}.dns ORDER BY time_ns"))
            .Should().Equal(dns.Select(e => Tsv(
                e.TimeUnixNano, "::ffff:" + new System.Net.IPAddress(e.Source.Ip.Span), e.Source.Port, e.Source.Pod, e.Source.Namespace,
                DnsServer(e), e.Destination.Port, e.Destination.Workload, Hex(e.Dns.Query), e.Dns.Qtype, e.Dns.Rcode,
                Array(e.Dns.Answers.Select(a => Quote(Hex(a.Name)))), Array(e.Dns.Answers.Select(a => Quote(a.Type))),
                Array(e.Dns.Answers.Select(a => Quote(a.Data))), Array(e.Dns.Answers.Select(a => a.Ttl.ToString(System.Globalization.CultureInfo.InvariantCulture))),
                e.Dns.LatencyUs, e.Dns.Id, e.Dns.IsResponse ? 1 : 0)));

        var process = events.Where(e => e.Type is EventType.Exec or EventType.Exit).ToList();
        (await Lines("SELECT time_ns, event, toInt8(event), node, capture, src_pid, hex(src_process), src_cgroup_id, src_container_id, src_pod, " +
                     "hex(src_labels_text), hex(src_ip), pid, ppid, uid, hex(exe), arrayMap(x -> hex(x), args), exit_code, parent_exe, lifetime_ns " +
                     $"FROM {db}.process_events ORDER BY time_ns"))
            .Should().Equal(process.Select(e => Tsv(
                e.TimeUnixNano, e.Type == EventType.Exec ? "exec" : "exit", (int)e.Type, e.Node, e.Capture, e.Source.Pid, Hex(e.Source.Process),
                e.Source.CgroupId, e.Source.ContainerId, e.Source.Pod, Hex(PackedStrings.Labels(e.Source.Labels)), new string('0', 32),
                e.Process.Pid, e.Process.Ppid, e.Process.Uid, Hex(e.Process.Exe), Array(e.Process.Args.Select(a => Quote(Hex(a)))),
                e.Process.ExitCode, e.Process.ParentExe, e.Process.LifetimeNs)));

        var files = events.Where(e => e.Type == EventType.File).ToList();
        (await Lines($"SELECT time_ns, src_pid, src_workload, hex(path), op, flags, result, hex(new_path) FROM {db}.file_events ORDER BY time_ns"))
            .Should().Equal(files.Select(e => Tsv(
                e.TimeUnixNano, e.Source.Pid, e.Source.Workload, Hex(e.File.Path), e.File.Op, e.File.Flags, e.File.Result, Hex(e.File.NewPath))));

        static string DnsServer(Event e)
        {
            var ip = new System.Net.IPAddress(e.Destination.Ip.Span);
            return ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? "::ffff:" + ip : ip.ToString();
        }
    }

    [Fact]
    public async Task Hostile_strings_in_names_args_and_paths_round_trip_exactly()
    {
        var db = ClickHouseServer.NewDatabase();
        var events = new List<Event>();
        for (var i = 0; i < TestEvents.Hostile.Length; i++)
        {
            var h = TestEvents.Hostile[i];
            var dns = TestEvents.Dns(i);
            dns.Dns.Query = h;
            dns.Dns.Answers.Clear();
            dns.Dns.Answers.Add(new DnsAnswer { Name = h, Type = h, Data = h, Ttl = 1 });
            var exec = TestEvents.Exec(i);
            exec.Process.Exe = h;
            exec.Process.Args.Clear();
            exec.Process.Args.AddRange([h, h + h, "", h]);
            exec.Source.Labels[h] = h;
            var file = TestEvents.File(i);
            file.File.Path = h;
            file.File.NewPath = "/" + h + "/" + h;
            events.AddRange([dns, exec, file]);
        }

        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, db);
        await PublishAsync(relay, events, chunk: 1000);
        await WaitStoredAsync(relay, events.Count);

        (await relay.Store.QueryAsync(new EventQuery(), [EventType.Dns, EventType.Exec, EventType.File])).Should().Equal(events);
        // '=' first, so the empty string's row is not an empty line.
        var hex = TestEvents.Hostile.Select(h => "=" + Hex(h)).ToList();
        (await Lines($"SELECT concat('=', hex(query)) FROM {db}.dns ORDER BY time_ns")).Should().Equal(hex);
        (await Lines($"SELECT hex(args[1]), hex(args[2]), length(args[3]) FROM {db}.process_events ORDER BY time_ns"))
            .Should().Equal(TestEvents.Hostile.Select(h => Tsv(Hex(h), Hex(h + h), 0)));
        (await Lines($"SELECT concat('=', hex(path)) FROM {db}.file_events ORDER BY time_ns")).Should().Equal(hex);

        // The one escaping function finds them again: a filter on the exact hostile value matches its row only.
        foreach (var h in TestEvents.Hostile)
        {
            (await ch.Client.QueryTextAsync($"SELECT count() FROM {db}.file_events WHERE path = {SqlLiteral.String(h)}"))
                .Trim().Should().Be("1", $"path {Hex(h)}");
            (await ch.Client.QueryTextAsync($"SELECT count() FROM {db}.process_events WHERE args[1] = {SqlLiteral.String(h)}"))
                .Trim().Should().Be("1", $"args {Hex(h)}");
        }
    }

    [Fact]
    public async Task Unknown_types_are_counted_and_a_table_dropped_mid_run_is_recreated_without_duplicating_the_others()
    {
        var db = ClickHouseServer.NewDatabase();
        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, db);
        var first = TestEvents.Mixed(20);
        await PublishAsync(relay, first, chunk: 1000);
        await WaitStoredAsync(relay, first.Count);

        // file_events is the last table of a flush: flows, dns and process_events go in, file_events
        // fails (unknown table), and the retry must send file_events alone once it exists again.
        await ch.Client.ExecuteAsync($"DROP TABLE {db}.file_events");
        var second = Enumerable.Range(20, 20).SelectMany(i => new[] { TestFlows.Flow(i), TestEvents.Dns(i), TestEvents.Exec(i), TestEvents.Exit(i), TestEvents.File(i) }).ToList();
        var batch = new EventBatch();
        batch.Events.AddRange(second);
        batch.Events.Add(new Event { Type = EventType.Unspecified, TimeUnixNano = TestFlows.BaseNs });
        batch.Events.Add(new Event { Type = (EventType)42, TimeUnixNano = TestFlows.BaseNs });
        await relay.Pipeline.PublishAsync(batch, CancellationToken.None);

        await WaitStoredAsync(relay, first.Count + second.Count);
        relay.Writer.EventsNotStored.Should().Be(2);
        relay.Writer.InsertErrors.Should().BeGreaterThan(0, "the insert into the dropped table failed first");
        relay.Writer.LastError.Should().BeNull();
        (await Lines($"SELECT (SELECT count() FROM {db}.flows), (SELECT count() FROM {db}.dns), (SELECT count() FROM {db}.process_events), (SELECT count() FROM {db}.file_events)"))
            .Should().Equal("40\t40\t80\t20");
        (await relay.Store.QueryAsync(new EventQuery())).Should().Equal(first.Where(e => e.Type != EventType.File).Concat(second).OrderBy(e => e.TimeUnixNano));
    }

    [Fact]
    public async Task The_writer_sends_when_its_bytes_reach_the_limit_so_long_rows_cannot_grow_it_unbounded()
    {
        // 4 KB paths, a 256 KiB limit, a row limit and flush interval that never fire: only the byte limit sends.
        var events = Enumerable.Range(0, 1_000).Select(i =>
        {
            var e = TestEvents.File(i);
            e.File.Path = "/" + new string('p', 4_000) + "/" + i;
            return e;
        }).ToList();
        var db = ClickHouseServer.NewDatabase();
        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, db, batchMaxRows: 1_000_000, batchMaxBytes: 256 << 10, flushInterval: "01:00:00");

        await PublishAsync(relay, events, chunk: 10);

        // Each send carries a bit over 256 KiB (≈ 60 rows); what is left under the limit waits for the interval.
        await Eventually.HoldsAsync(() => relay.Writer.EventsStored >= events.Count - 70, Timeout, () => $"stored {relay.Writer.EventsStored}");
        relay.Writer.Inserts.Should().BeGreaterThanOrEqualTo(14);
        (relay.Writer.EventsStored / relay.Writer.Inserts).Should().BeInRange(55, 75, "each insert is about 256 KiB of 4 KB rows");
        (await ch.RunClientAsync($"SELECT count() FROM {db}.file_events")).Trim().Should().Be(relay.Writer.EventsStored.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    private static async Task PublishAsync(StorageHost relay, IReadOnlyList<Event> events, int chunk)
    {
        foreach (var part in events.Chunk(chunk))
        {
            var batch = new EventBatch { Node = "n" };
            batch.Events.AddRange(part);
            await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
        }
    }

    private static Task WaitStoredAsync(StorageHost relay, int count) =>
        Eventually.HoldsAsync(() => relay.Writer.EventsStored == count, Timeout,
            () => $"stored {relay.Writer.EventsStored}/{count}, last error {relay.Writer.LastError}");

    private async Task<string[]> Lines(string sql) =>
        (await ch.RunClientAsync(sql + " FORMAT TabSeparated")).Split('\n', StringSplitOptions.RemoveEmptyEntries);

    private static string Tsv(params object[] values) =>
        string.Join('\t', values.Select(v => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture)));

    private static string Hex(string s) => Convert.ToHexString(Encoding.UTF8.GetBytes(s));

    private static string Quote(string s) => "'" + s + "'";

    private static string Array(IEnumerable<string> items) => "[" + string.Join(',', items) + "]";

    private static DateTimeOffset At(ulong ns) => DateTimeOffset.UnixEpoch.AddTicks((long)(ns / 100));

    private static ulong Ns(DateTimeOffset t) => (ulong)(t - DateTimeOffset.UnixEpoch).Ticks * 100;
}
