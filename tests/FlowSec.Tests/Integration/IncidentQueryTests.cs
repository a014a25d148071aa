using System.Text.Json;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Integration;

/// <summary>
/// <c>flowsec query</c> for incident review against a real relay and ClickHouse: group-by with
/// counts and bytes on every kind, alerts stored and filtered, and bad input refused with exit 2
/// and a message, changing nothing. Each test uses its own hour of event time.
/// </summary>
public sealed class IncidentQueryTests(IngestRelay relay) : IClassFixture<IngestRelay>
{
    private const string Node = "query-node";

    [Fact]
    public async Task Group_by_counts_events_and_bytes_per_group_for_every_kind()
    {
        var events = await IngestAsync(TestEvents.Mixed(60), hour: 1);
        var window = Window(hour: 1);

        var flows = events.Where(e => e.Type == EventType.Flow).ToList();
        var byPodAndPort = await GroupsAsync(["query", "flows", .. window, "--group-by", "source.pod,destination.port", "-o", "json"], "source.pod", "destination.port");
        byPodAndPort.Should().BeEquivalentTo(Expected(flows, e => [Pod(e.Source), e.Destination.Port.ToString(System.Globalization.CultureInfo.InvariantCulture)]));
        byPodAndPort.Select(g => g.Count).Should().BeInDescendingOrder("largest groups first");

        var top2 = await GroupsAsync(["query", "flows", .. window, "--group-by", "destination.port", "--top", "2", "--sort", "bytes", "-o", "json"], "destination.port");
        top2.Should().HaveCount(2);
        var byBytes = Expected(flows, e => [e.Destination.Port.ToString(System.Globalization.CultureInfo.InvariantCulture)])
            .OrderByDescending(g => unchecked(g.Sent + g.Received)).Take(2);
        top2.Should().Equal(byBytes);

        var dns = events.Where(e => e.Type == EventType.Dns).ToList();
        (await GroupsAsync(["query", "dns", .. window, "--group-by", "dns.query", "--group-by", "source.pod", "-o", "json"], "dns.query", "source.pod"))
            .Should().BeEquivalentTo(Expected(dns, e => [e.Dns.Query, Pod(e.Source)]), "hostile query names come back intact");
        (await GroupsAsync(["query", "process", .. window, "--group-by", "type,process.exe", "-o", "json"], "type", "process.exe"))
            .Should().BeEquivalentTo(Expected(events.Where(e => e.Type is EventType.Exec or EventType.Exit).ToList(),
                e => [e.Type == EventType.Exec ? "exec" : "exit", e.Process.Exe]));
        (await GroupsAsync(["query", "file", .. window, "--group-by", "file.op", "--namespace", "shop", "-o", "json"], "file.op"))
            .Should().BeEquivalentTo(Expected(events.Where(e => e.Type == EventType.File && e.Source.Namespace == "shop").ToList(), e => [e.File.Op]));

        var (table, _) = await relay.CliAsync(0, ["query", "flows", .. window, "--group-by", "source.pod,destination.port", "--top", "3"]);
        table.Should().HaveCount(4);
        table[0].Should().MatchRegex(@"^SOURCE\.POD\s+DESTINATION\.PORT\s+COUNT\s+BYTES_SENT\s+BYTES_RECEIVED$");
    }

    [Fact]
    public async Task Alerts_ingested_through_the_relay_are_queryable_and_filtered()
    {
        var alerts = Enumerable.Range(0, 12).Select(i => new Event
        {
            TimeUnixNano = TestFlows.BaseNs + (ulong)i * 1_000_000,
            Type = EventType.Alert,
            Capture = "bpf",
            Source = new Endpoint { Pod = $"web-{i % 3}", Namespace = i % 2 == 0 ? "shop" : "dev", Process = "sh", Pid = (uint)(100 + i) },
            Destination = new Endpoint(),
            Alert = new Alert { Rule = i % 4 == 0 ? "Shell in container" : "Read of /etc/shadow", Priority = i % 4 == 0 ? "warning" : "critical", Message = $"it's alert {i}" },
        }).ToList();
        alerts = await IngestAsync(alerts, hour: 2);
        var window = Window(hour: 2);

        var all = Parse((await relay.CliAsync(0, ["query", "alerts", .. window, "-o", "json"])).Stdout);
        all.Select(a => a.GetProperty("alert").GetProperty("message").GetString()).Should().Equal(alerts.Select(a => a.Alert.Message));
        all.Should().OnlyContain(a => a.GetProperty("type").GetString() == "alert");

        var inPod = Parse((await relay.CliAsync(0, ["query", "alerts", .. window, "--pod", "shop/web-0", "-o", "json"])).Stdout);
        inPod.Select(a => a.GetProperty("alert").GetProperty("message").GetString())
            .Should().Equal(alerts.Where(a => a.Source.Namespace == "shop" && a.Source.Pod == "web-0").Select(a => a.Alert.Message)).And.NotBeEmpty();

        (await GroupsAsync(["query", "alerts", .. window, "--group-by", "alert.rule,alert.priority", "-o", "json"], "alert.rule", "alert.priority"))
            .Should().BeEquivalentTo(Expected(alerts, a => [a.Alert.Rule, a.Alert.Priority]));

        var table = (await relay.CliAsync(0, ["query", "alerts", .. window, "--last", "1"])).Stdout;
        table.Should().HaveCount(2);
        table[1].Should().Contain("critical Read of /etc/shadow: it's alert 11");
    }

    [Fact]
    public async Task Bad_filters_and_group_by_fields_are_usage_errors_that_change_nothing()
    {
        var events = await IngestAsync(TestFlows.Flows(40), hour: 3);
        var window = Window(hour: 3);
        var before = (await relay.CliAsync(0, ["query", "flows", .. window, "-o", "json"])).Stdout;
        before.Should().HaveCount(events.Count);

        foreach (var (args, message) in new (string[], string)[]
                 {
                     (["--group-by", "source.podd"], "unknown group-by field 'source.podd'; valid fields: node, type, source.namespace, source.pod"),
                     (["--group-by", "dns.query"], "group-by field 'dns.query' does not apply to flows"),
                     (["--top", "3"], "--top and --sort need --group-by"),
                     (["--port", "70000"], "port 70000 is not a port"),
                     (["--to-port", "65536"], "65536 is not a port"),
                     (["--ip", "10.0.0.0/99"], "'10.0.0.0/99' has a bad prefix length"),
                     (["--from-ip", "10.0.0.1';--"], "is not an IP address"),
                     (["--dns", "a*.example.com"], "use an exact name or *.suffix"),
                     (["--process", new string('p', 100 * 1024)], "at most 1024"),
                 })
        {
            var (stdout, stderr) = await relay.CliAsync(2, ["query", "flows", .. window, .. args]);
            stderr.Should().Contain(message, string.Join(' ', args.Select(a => a.Length > 40 ? a[..40] + "…" : a)));
            stdout.Should().BeEmpty();
        }

        // The same reach the relay from other clients: InvalidArgument, not a query.
        var act = () => relay.Client.UnaryAsync(RelayMethods.Aggregate, new AggregateRequest { GroupBy = { "src_pod; DROP TABLE flows" } },
            AggregateResponse.Parser, CancellationToken.None);
        (await act.Should().ThrowAsync<GrpcException>()).Which.Status.Should().Be(GrpcStatusCode.InvalidArgument);
        var bad = new GetEventsRequest { Allow = { new EventFilter { Port = { 70000 } } } };
        var list = async () => await relay.Client.ServerStreamingAsync(RelayMethods.GetEvents, bad, Event.Parser, CancellationToken.None).ToListAsync();
        (await list.Should().ThrowAsync<GrpcException>()).Which.Status.Should().Be(GrpcStatusCode.InvalidArgument);

        // Quotes, backslashes and comment starts are values like any other.
        foreach (var process in new[] { "it's \"quoted\"", "back\\slash", "--;DROP" })
        {
            (await relay.CliAsync(0, ["query", "flows", .. window, "--process", process, "-o", "json"])).Stdout
                .Should().HaveCount(events.Count(e => e.Source.Process == process)).And.NotBeEmpty();
        }

        (await relay.CliAsync(0, ["query", "flows", .. window, "-o", "json"])).Stdout.Should().Equal(before, "nothing changed");
    }

    // Shifts a test corpus to its own hour, ingests it through the relay, and returns it as stored (node set).
    private async Task<List<Event>> IngestAsync(List<Event> events, int hour)
    {
        foreach (var e in events)
        {
            e.TimeUnixNano += (ulong)hour * 3_600_000_000_000;
            e.Node = Node;
        }
        await relay.IngestAsync(events, Node);
        return events;
    }

    private static string[] Window(int hour)
    {
        var start = DateTimeOffset.FromUnixTimeMilliseconds((long)(TestFlows.BaseNs / 1_000_000)).AddHours(hour);
        return ["--since", start.ToString("O"), "--until", start.AddHours(1).ToString("O")];
    }

    private static string Pod(Endpoint ep) => ep.Pod.Length == 0 ? "" : $"{ep.Namespace}/{ep.Pod}";

    private static List<Group> Expected(List<Event> events, Func<Event, string[]> key) =>
        events.GroupBy(e => string.Join('\u0001', key(e)))
            .Select(g => new Group(key(g.First()), (ulong)g.Count(),
                g.Aggregate(0UL, (s, e) => unchecked(s + (e.Flow?.BytesSent ?? 0))),
                g.Aggregate(0UL, (s, e) => unchecked(s + (e.Flow?.BytesReceived ?? 0)))))
            .ToList();

    private async Task<List<Group>> GroupsAsync(string[] args, params string[] fields) =>
        Parse((await relay.CliAsync(0, args)).Stdout).Select(o => new Group(fields.Select(f => o.GetProperty(f).GetString()!).ToArray(),
            o.GetProperty("count").GetUInt64(), o.GetProperty("bytes_sent").GetUInt64(), o.GetProperty("bytes_received").GetUInt64())).ToList();

    private static List<JsonElement> Parse(List<string> lines) => lines.Select(l => JsonDocument.Parse(l).RootElement).ToList();

    private sealed record Group(string[] Keys, ulong Count, ulong Sent, ulong Received)
    {
        public bool Equals(Group? other) => other is not null && Keys.SequenceEqual(other.Keys) && (Count, Sent, Received) == (other.Count, other.Sent, other.Received);

        public override int GetHashCode() => HashCode.Combine(string.Join('\u0001', Keys), Count, Sent, Received);
    }
}
