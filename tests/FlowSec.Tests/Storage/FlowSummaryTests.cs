using FlowSec.Api.Filters;
using FlowSec.Api.V1;
using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>
/// The tables derived from flows by materialized views (hourly summaries, the per-minute dst_port
/// counts) give exactly the answers the flows table gives: random group-by requests and "newest N"
/// port queries over random events spread across hours and a day boundary, stored in the real 18.16
/// server in several INSERTs (so summaries hold unmerged rows), each answered with and without the
/// derived tables and compared; a database from before them is backfilled once, even by two relays;
/// and one with the per-flow port index of schema version 8 gets the counts in its place.
/// </summary>
public sealed class FlowSummaryTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    private const int Seed = 777;
    private const ulong HourNs = 3_600_000_000_000;

    // Group-by fields the summaries hold, and some they do not (those must fall back to flows).
    private static readonly string[] Covered = ["node", "type", "source.namespace", "source.pod", "source.workload", "protocol", "verdict", "drop_reason"];
    private static readonly string[] NotCovered = ["source.ip", "state", "source.port", "destination.pod", "destination.port"];

    [Fact]
    public async Task Aggregates_through_summaries_equal_the_raw_answer_for_random_requests()
    {
        var corpus = new FilterCorpus(Seed);
        var events = Spread(corpus.Events(900), corpus);
        var db = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync();
        await InsertAsync(db, events, batches: 6);

        var used = await CompareAggregatesAsync(db, corpus, events, cases: 300);

        used.Should().BeGreaterThan(100, "most requests are ones a summary serves");
    }

    [Fact]
    public async Task Newest_flows_to_a_port_through_the_port_counts_equal_the_raw_answer()
    {
        var corpus = new FilterCorpus(Seed + 1);
        var events = Spread(corpus.Events(600), corpus);
        var db = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync();
        await InsertAsync(db, events, batches: 3);

        var lookups = await ComparePortQueriesAsync(db, events, cases: 80);

        lookups.Should().BeGreaterThan(40, "requests filtered on the port alone use the counts");
        (await ch.Client.QueryTextAsync($"SELECT sum(flows) FROM {db}.flow_dst_port_minutes")).Trim()
            .Should().Be(events.Count(e => e.Type == EventType.Flow).ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    // Schema version 8 created the summaries, version 10 the port counts (ClickHouseSchema's migrations, in order).
    private const int SchemaBeforeSummaries = 7;
    private const int SchemaWithPerFlowPortIndex = 8;

    [Fact]
    public async Task An_existing_database_is_backfilled_once_even_when_two_relays_upgrade_it_together()
    {
        var (corpus, events, db) = await OlderDatabaseAsync(Seed + 2, SchemaBeforeSummaries);
        (await ch.Client.QueryTextAsync($"SELECT count() FROM system.tables WHERE database = {SqlLiteral.String(db)} AND name LIKE 'flow%summary%'")).Trim()
            .Should().Be("0", "the release before had no summaries");
        var old = events.Take(400).ToList();
        await InsertAsync(db, old, batches: 2);

        // Two relays starting together both see the old version and both run the steps.
        var versions = await Task.WhenAll(Enumerable.Range(0, 2).Select(_ => new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync()));
        versions.Should().AllBeEquivalentTo(ClickHouseSchema.LatestVersion);
        await InsertAsync(db, events.Skip(400).ToList(), batches: 2); // through the views

        var flows = events.Count(e => e.Type == EventType.Flow).ToString(System.Globalization.CultureInfo.InvariantCulture);
        (await ch.Client.QueryTextAsync($"SELECT sum(flows) FROM {db}.flow_summary_src")).Trim().Should().Be(flows, "the summary counts every flow once");
        (await ch.Client.QueryTextAsync($"SELECT sum(flows) FROM {db}.flow_dst_port_minutes")).Trim().Should().Be(flows, "the port counts count every flow once");
        (await ch.Client.QueryTextAsync($"SELECT count() FROM system.tables WHERE database = {SqlLiteral.String(db)} AND name LIKE 'flows_by_dst_port%'")).Trim()
            .Should().Be("0", "a database older than the per-flow index never gets it");
        (await CompareAggregatesAsync(db, corpus, events, cases: 60)).Should().BeGreaterThan(15);
        (await ComparePortQueriesAsync(db, events, cases: 20)).Should().BeGreaterThan(10);
    }

    [Fact]
    public async Task A_database_with_the_per_flow_port_index_gets_the_port_counts_in_its_place()
    {
        var (_, events, db) = await OlderDatabaseAsync(Seed + 3, SchemaWithPerFlowPortIndex);
        // The per-flow index and its view exactly as schema version 8 created them on 18.16, frozen here.
        await ch.Client.ExecuteAsync($"CREATE TABLE {db}.flows_by_dst_port (`dst_port` UInt16, `time` DateTime('UTC'), `time_ns` UInt64) " +
                                     "ENGINE = MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (dst_port, toStartOfHour(time), time_ns)");
        await ch.Client.ExecuteAsync($"CREATE MATERIALIZED VIEW {db}.flows_by_dst_port_mv TO {db}.flows_by_dst_port AS SELECT `dst_port`, time, time_ns FROM {db}.flows");
        await InsertAsync(db, events.Take(400).ToList(), batches: 2);

        var versions = await Task.WhenAll(Enumerable.Range(0, 2).Select(_ => new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync()));
        versions.Should().AllBeEquivalentTo(ClickHouseSchema.LatestVersion);
        await InsertAsync(db, events.Skip(400).ToList(), batches: 2); // through the new view only

        (await ch.Client.QueryTextAsync($"SELECT name FROM system.tables WHERE database = {SqlLiteral.String(db)} AND name LIKE '%port%' ORDER BY name FORMAT TabSeparated"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal(["flow_dst_port_minutes", "flow_dst_port_minutes_mv"], "the per-flow index and its view are gone");
        var flows = events.Count(e => e.Type == EventType.Flow).ToString(System.Globalization.CultureInfo.InvariantCulture);
        (await ch.Client.QueryTextAsync($"SELECT sum(flows) FROM {db}.flow_dst_port_minutes")).Trim().Should().Be(flows, "old flows backfilled once, new ones counted by the view");
        (await ch.Client.QueryTextAsync($"SELECT sum(flows) FROM {db}.flow_summary_src")).Trim().Should().Be(flows, "the source summary is untouched");
        (await ComparePortQueriesAsync(db, events, cases: 30)).Should().BeGreaterThan(15);
    }

    // A new database as the release of schema `version` left it, and 600 random events spread over seven hours.
    private async Task<(FilterCorpus Corpus, List<Event> Events, string Db)> OlderDatabaseAsync(int seed, int version)
    {
        var corpus = new FilterCorpus(seed);
        var events = Spread(corpus.Events(600), corpus);
        var db = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync(version, CancellationToken.None);
        return (corpus, events, db);
    }

    [Fact]
    public void Filters_name_their_columns_and_values_are_never_taken_for_columns()
    {
        string Sql(EventFilter f) => EventFilterSql.Where(FlowTable.Table, new EventFilterMatcher([f], []));

        FlowSummary.ColumnsOf(Sql(new EventFilter { DestinationPort = { 5432 }, Verdict = { Verdict.Dropped } }))
            .Should().BeEquivalentTo(["dst_port", "verdict"]);
        FlowSummary.ColumnsOf(Sql(new EventFilter { Pod = { "shop/`src_ip`", "it's `dst_ip`" } }))
            .Should().BeEquivalentTo(["src_namespace", "src_pod", "dst_namespace", "dst_pod"], "backquotes inside a value are the value's");
        FlowSummary.ColumnsOf(Sql(new EventFilter { Label = { "app=web" } })).Should().Contain("src_labels_text");
        FlowSummary.ColumnsOf("`src_pod` = 'a' AND query = 'x'").Should().BeNull("a column named without backquotes cannot be vouched for");
        FlowSummary.ColumnsOf("`src_pod` = 'a' AND src_ip = 'x'").Should().BeNull("a column named without backquotes cannot be vouched for");
        FlowSummary.SummaryFor(["src_pod", "verdict", "drop_reason"]).Should().Be(FlowSummary.Sources);
        FlowSummary.SummaryFor(["src_pod", "dst_port"]).Should().BeNull("the summary has no destination side");
        FlowSummary.SummaryFor(["src_ip"]).Should().BeNull();
    }

    // Compares random "newest N flows to these ports" queries with and without the port counts; returns
    // how many used the counts. Limits up to a few minutes' worth of a port's flows, so where the
    // newest N start falls in every kind of minute: whole, ragged at either end of the window, empty.
    private async Task<int> ComparePortQueriesAsync(string db, List<Event> events, int cases)
    {
        var (withCounts, raw) = Stores(db);
        var random = new Random(Seed + cases);
        var flows = events.Where(e => e.Type == EventType.Flow).ToList();
        var nonEmpty = 0;
        for (var i = 0; i < cases; i++)
        {
            var filter = new EventFilter();
            filter.DestinationPort.Add(flows[random.Next(flows.Count)].Destination.Port);
            if (i % 4 == 1)
            {
                filter.DestinationPort.Add(flows[random.Next(flows.Count)].Destination.Port);
            }
            if (i % 3 == 0)
            {
                filter.EventType.Add(EventType.Flow);
            }
            var allow = new[] { filter };
            var deny = i % 5 == 2 ? new[] { new EventFilter { DestinationPort = { flows[random.Next(flows.Count)].Destination.Port } } } : [];
            var (since, until) = random.Next(3) == 0 ? RandomMinuteWindow(random) : RandomWindow(random);
            var query = new EventQuery(since, until, 1 + random.Next(random.Next(2) == 0 ? 5 : 60), new EventFilterMatcher(allow, deny));
            var expected = (await raw.QueryAsync(query, [EventType.Flow])).Select(e => e.TimeUnixNano).ToList();

            var what = $"case {i}: allow {filter} deny [{string.Join(", ", deny.Select(d => d.ToString()))}] {since:O}..{until:O} limit {query.Limit}";
            (await withCounts.QueryAsync(query, [EventType.Flow])).Select(e => e.TimeUnixNano).Should().Equal(expected, what);
            (await raw.QueryAsync(query with { Limit = null }, [EventType.Flow])).Select(e => e.TimeUnixNano).TakeLast(query.Limit!.Value)
                .Should().Equal(expected, "the newest N are the last N of all matches");
            nonEmpty += expected.Count > 0 ? 1 : 0;
        }
        nonEmpty.Should().BeGreaterThan(cases / 2, "most requests find flows");
        raw.PortCountLookups.Should().Be(0);
        return withCounts.PortCountLookups;
    }

    // Windows with bounds on minutes (whole minutes inside) or a nanosecond either side of one.
    private static (DateTimeOffset? Since, DateTimeOffset? Until) RandomMinuteWindow(Random random)
    {
        DateTimeOffset? Bound()
        {
            if (random.Next(6) == 0)
            {
                return null;
            }
            var minute = Start + (ulong)random.Next(0, 7 * 60) * 60_000_000_000;
            return Time(random.Next(3) switch { 0 => minute - 100, 1 => minute, _ => minute + 100 });
        }
        var (a, b) = (Bound(), Bound());
        return a is { } x && b is { } y && y < x ? (b, a) : (a, b);
    }

    // Compares random aggregates with and without summaries; returns how many used a summary.
    private async Task<int> CompareAggregatesAsync(string db, FilterCorpus corpus, List<Event> events, int cases)
    {
        var (summaries, raw) = Stores(db);
        var random = new Random(Seed + cases);
        var nonEmpty = 0;
        for (var i = 0; i < cases; i++)
        {
            var fields = Enumerable.Range(0, 1 + random.Next(2))
                .Select(_ => random.Next(8) == 0 ? NotCovered[random.Next(NotCovered.Length)] : Covered[random.Next(Covered.Length)])
                .Distinct().Select(GroupByField.Parse).ToArray();
            var allow = random.Next(3) == 0 ? [] : Enumerable.Range(0, 1 + random.Next(2)).Select(_ => CoveredFilter(corpus, random)).ToArray();
            var deny = random.Next(5) == 0 ? [CoveredFilter(corpus, random)] : Array.Empty<EventFilter>();
            var (since, until) = RandomWindow(random);
            var query = new AggregateQuery(new EventQuery(since, until, Filter: allow.Length + deny.Length == 0 ? null : new EventFilterMatcher(allow, deny)),
                fields, random.Next(4) == 0 ? 1 + random.Next(3) : 1000, SortByBytes: random.Next(2) == 0);

            var expected = await raw.AggregateAsync(query, [EventType.Flow]);
            var actual = await summaries.AggregateAsync(query, [EventType.Flow]);

            var what = $"case {i} (seed {Seed}): group by {string.Join(",", fields.Select(f => f.Name))}, {since:O}..{until:O}, top {query.Top}, " +
                       $"bytes {query.SortByBytes}, allow [{string.Join(", ", allow.Select(f => f.ToString()))}] deny [{string.Join(", ", deny.Select(f => f.ToString()))}]";
            actual.Should().HaveSameCount(expected, what);
            for (var r = 0; r < expected.Count; r++)
            {
                actual[r].Keys.Should().Equal(expected[r].Keys, what);
                (actual[r].Count, actual[r].BytesSent, actual[r].BytesReceived).Should().Be((expected[r].Count, expected[r].BytesSent, expected[r].BytesReceived), what);
            }
            nonEmpty += expected.Count > 0 && expected.Sum(g => (long)g.Count) > 0 ? 1 : 0;
        }
        nonEmpty.Should().BeGreaterThan(cases / 2, "most requests find flows");
        raw.SummaryQueries.Should().Be(0);
        return summaries.SummaryQueries;
    }

    // Mostly fields the summaries hold (so many requests use one), sometimes any field.
    private static EventFilter CoveredFilter(FilterCorpus corpus, Random random)
    {
        if (random.Next(4) == 0)
        {
            return corpus.Filter();
        }
        var f = corpus.Filter();
        var covered = new EventFilter();
        covered.Node.AddRange(f.Node);
        covered.SourcePod.AddRange(f.SourcePod);
        covered.Protocol.AddRange(f.Protocol);
        covered.EventType.AddRange(f.EventType);
        covered.Verdict.AddRange(f.Verdict);
        return covered;
    }

    // Windows over the events' 7 hours (and beyond): open ends, whole hours, odd seconds and nanoseconds.
    private static (DateTimeOffset? Since, DateTimeOffset? Until) RandomWindow(Random random)
    {
        DateTimeOffset? Bound() => random.Next(5) switch
        {
            0 => null,
            1 => Time((ulong)((long)Start + random.Next(-1, 9) * (long)HourNs)),
            2 => Time(Start + (ulong)random.Next(0, 8) * HourNs + (ulong)random.Next(1, 3600) * 1_000_000_000),
            _ => Time(Start + (ulong)(random.NextDouble() * 8 * HourNs)),
        };
        var (a, b) = (Bound(), Bound());
        return a is { } x && b is { } y && y < x ? (b, a) : (a, b);
    }

    private static DateTimeOffset Time(ulong ns) => DateTimeOffset.UnixEpoch.AddTicks((long)(ns / 100));

    // 2026-11-21T23:00Z: the events span seven hours across midnight, so two day partitions.
    private const ulong Start = FilterCorpus.BaseNs - 3 * HourNs;

    // The corpus's events, spread over seven hours in time order, with drop reasons and packets.
    private static List<Event> Spread(List<Event> events, FilterCorpus corpus)
    {
        string[] reasons = ["", "policy", "it's \"x\"", "nul\0"];
        for (var i = 0; i < events.Count; i++)
        {
            var e = events[i];
            e.TimeUnixNano = Start + (ulong)((double)i / events.Count * 7 * HourNs) + (ulong)corpus.Next(1_000_000);
            if (e.Flow is { } flow)
            {
                flow.DropReason = reasons[corpus.Next(reasons.Length)];
                flow.PacketsSent = (ulong)corpus.Next(100);
                flow.BytesSent = i % 50 == 0 ? ulong.MaxValue / 4 : flow.BytesSent; // sums far past 32 bits
            }
        }
        return events;
    }

    private (ClickHouseEventStore Summaries, ClickHouseEventStore Raw) Stores(string db)
    {
        var raw = ch.Options(db);
        raw.UseFlowSummaries = false;
        return (new ClickHouseEventStore(ch.Client, ch.Options(db)), new ClickHouseEventStore(ch.Client, raw));
    }

    private async Task InsertAsync(string db, List<Event> events, int batches)
    {
        foreach (var table in EventTables.All)
        {
            var stored = events.Where(e => table.Types.Contains(e.Type)).ToList();
            foreach (var chunk in stored.Chunk(Math.Max(1, (stored.Count + batches - 1) / batches)))
            {
                var rows = new RowBinaryWriter();
                foreach (var e in chunk)
                {
                    table.WriteRow(rows, e);
                }
                await ch.Client.InsertRowBinaryAsync($"{db}.{table.Name}", table.ColumnNames, rows.WrittenMemory);
            }
        }
    }
}
