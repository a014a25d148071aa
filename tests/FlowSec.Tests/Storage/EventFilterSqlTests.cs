using FlowSec.Api.Filters;
using FlowSec.Api.V1;
using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>
/// Filters pushed into ClickHouse mean what the C# matcher (live follow) means: random filters over
/// random events stored in the real 18.16 server, the SQL answer compared with the matcher's over
/// the same events; and hostile values are literals or clear errors that change nothing.
/// </summary>
public sealed class EventFilterSqlTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    private const int Seed = 4242;

    [Fact]
    public async Task Sql_filters_select_exactly_what_the_matcher_selects()
    {
        var corpus = new FilterCorpus(Seed);
        var events = corpus.Events(600);
        var (store, _) = await StoreAsync(events);

        var cases = 0;
        var nonTrivial = 0;
        for (var i = 0; i < 300; i++)
        {
            var allow = Enumerable.Range(0, corpus.Next(3)).Select(_ => corpus.Filter()).ToArray();
            var deny = Enumerable.Range(0, corpus.Next(4) == 0 ? 1 : 0).Select(_ => corpus.Filter()).ToArray();
            var matcher = new EventFilterMatcher(allow, deny);
            var limit = i % 10 == 9 ? 5 : (int?)null;
            var expected = events.Where(matcher.Matches).Select(e => e.TimeUnixNano).ToList();
            if (limit is { } n)
            {
                expected = expected.TakeLast(n).ToList();
            }

            var actual = (await store.QueryAsync(new EventQuery(Limit: limit, Filter: matcher))).Select(e => e.TimeUnixNano).ToList();

            actual.Should().Equal(expected, $"case {i} (seed {Seed}): allow [{string.Join(", ", allow.Select(f => f.ToString()))}] deny [{string.Join(", ", deny.Select(f => f.ToString()))}]");
            cases++;
            nonTrivial += expected.Count > 0 && expected.Count < events.Count ? 1 : 0;
        }

        cases.Should().Be(300);
        nonTrivial.Should().BeGreaterThan(100, "most cases select some events and not all");
    }

    [Fact]
    public async Task Hostile_values_match_literally_and_untypable_ones_are_errors_that_change_nothing()
    {
        var corpus = new FilterCorpus(Seed + 1);
        var events = corpus.Events(200);
        var (store, db) = await StoreAsync(events);
        var before = await CountsAsync(db);

        // Quotes, backslashes, comment starts, semicolons, NUL, newlines: plain values, matched as written.
        foreach (var value in new[] { "it's \"quoted\"", "back\\slash", "nul\0tab\tnl\n", "--;DROP", "'; DROP TABLE flows; --", "\\'", "é中😀", "sep\x1e\x1f\x1d" + "0", new string('x', CompiledEventFilter.MaxValueLength - 2) })
        {
            foreach (var filter in new[] { new EventFilter { Process = { value } }, new EventFilter { Pod = { value } }, new EventFilter { Label = { "k=" + value } }, new EventFilter { DnsName = { value } } })
            {
                var matcher = new EventFilterMatcher([filter], []);
                (await store.QueryAsync(new EventQuery(Filter: matcher))).Select(e => e.TimeUnixNano)
                    .Should().Equal(events.Where(matcher.Matches).Select(e => e.TimeUnixNano), filter.ToString());
            }
        }
        events.Should().Contain(e => e.Source.Process == "nul\0tab\tnl\n", "the corpus holds the hostile values the filters look for");

        foreach (var (bad, message) in new (EventFilter, string)[]
                 {
                     (new EventFilter { Ip = { "10.0.0.0/99" } }, "bad prefix length"),
                     (new EventFilter { Ip = { "10.0.0.1'; DROP TABLE flows; --" } }, "not an IP address"),
                     (new EventFilter { SourceIp = { "" } }, "not an IP address"),
                     (new EventFilter { Port = { 70000 } }, "70000 is not a port"),
                     (new EventFilter { DestinationPort = { uint.MaxValue } }, "is not a port"),
                     (new EventFilter { Protocol = { (Protocol)42 } }, "unknown protocol 42"),
                     (new EventFilter { EventType = { (EventType)99 } }, "unknown event type 99"),
                     (new EventFilter { Verdict = { (Verdict)(-1) } }, "unknown verdict -1"),
                     (new EventFilter { Process = { new string('a', 100 * 1024) } }, "at most 1024"),
                     (new EventFilter { Namespace = { "bad\ud800surrogate" } }, "lone UTF-16 surrogate"),
                     (new EventFilter { Pod = { "shop/" } }, "use pod or namespace/pod"),
                     (new EventFilter { DnsName = { "*" } }, "exact name or *.suffix"),
                     (new EventFilter { DnsName = { "*." } }, "exact name or *.suffix"),
                     (new EventFilter { Label = { "=web" } }, "use key=value or key"),
                 })
        {
            var act = () => new EventFilterMatcher([new EventFilter(), bad], []);
            act.Should().Throw<ArgumentException>().WithMessage($"*{message}*", message);
        }

        (await CountsAsync(db)).Should().Equal(before, "no query changed anything");
    }

    private async Task<(ClickHouseEventStore Store, string Database)> StoreAsync(List<Event> events)
    {
        var db = ClickHouseServer.NewDatabase();
        var options = ch.Options(db);
        await new ClickHouseSchema(ch.Client, options).EnsureAsync();
        foreach (var table in EventTables.All)
        {
            var rows = new RowBinaryWriter();
            var stored = events.Where(e => table.Types.Contains(e.Type)).ToList();
            stored.ForEach(e => table.WriteRow(rows, e));
            await ch.Client.InsertRowBinaryAsync($"{db}.{table.Name}", table.ColumnNames, rows.WrittenMemory);
        }
        var store = new ClickHouseEventStore(ch.Client, options);
        (await store.QueryAsync(new EventQuery())).Should().HaveCount(events.Count, "every event is stored");
        return (store, db);
    }

    // Every table of the database with its row count: a dropped table or changed row shows here.
    private async Task<List<string>> CountsAsync(string db) =>
        (await ch.Client.QueryTextAsync(
            $"SELECT t.name, p.rows FROM system.tables AS t ANY LEFT JOIN (SELECT table AS name, sum(rows) AS rows FROM system.parts " +
            $"WHERE active AND database = {SqlLiteral.String(db)} GROUP BY table) AS p USING name WHERE t.database = {SqlLiteral.String(db)} ORDER BY t.name FORMAT TabSeparated"))
        .Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
}
