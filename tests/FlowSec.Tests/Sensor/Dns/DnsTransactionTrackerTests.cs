using System.Net;
using FlowSec.Api.V1;
using FlowSec.Sensor.Dns;

namespace FlowSec.Tests.Sensor.Dns;

public class DnsTransactionTrackerTests
{
    private const long Ms = 1_000_000;
    private static readonly IPAddress Client = IPAddress.Parse("10.200.1.1");
    private static readonly IPAddress Server = IPAddress.Parse("10.200.1.2");
    private const ushort ClientPort = 40000;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    private readonly List<Event> _events = [];
    private readonly DnsNameCache _names = new(100, TimeSpan.FromMinutes(5), TimeSpan.FromHours(1));

    [Fact]
    public void Lookup_seen_from_the_client_is_one_event_with_latency()
    {
        var tracker = NewTracker();
        tracker.UnixOffsetNs = 1_700_000_000_000_000_000;
        var query = DnsPacketBuilder.Query(0x1234, "web.flowsec.test", 1).Build();
        var response = Response(0x1234, "web.flowsec.test", "10.9.8.7");

        tracker.Observe(ClientSends(1000 * Ms, pid: 4242, comm: "dig", cgroup: 77), query);
        tracker.Observe(ClientReceives(1000 * Ms + 1_234_567, pid: 4242, comm: "dig", cgroup: 77), response);

        var e = _events.Should().ContainSingle().Subject;
        e.Type.Should().Be(EventType.Dns);
        e.Node.Should().Be("node-a");
        e.Capture.Should().Be("bpf");
        e.TimeUnixNano.Should().Be((ulong)(1_700_000_000_000_000_000 + 1000 * Ms + 1_234_567));
        e.Dns.Query.Should().Be("web.flowsec.test");
        e.Dns.Qtype.Should().Be("A");
        e.Dns.Rcode.Should().Be("NOERROR");
        e.Dns.Id.Should().Be(0x1234u);
        e.Dns.IsResponse.Should().BeTrue();
        e.Dns.LatencyUs.Should().Be(1235, "1.234567 ms rounded up to whole µs");
        e.Dns.Answers.Should().ContainSingle().Which.Should().Be(new FlowSec.Api.V1.DnsAnswer
        {
            Name = "web.flowsec.test",
            Type = "A",
            Data = "10.9.8.7",
            Ttl = 300,
        });
        e.Source.Ip.ToByteArray().Should().Equal(Client.GetAddressBytes());
        e.Source.Port.Should().Be(ClientPort);
        e.Source.Pid.Should().Be(4242);
        e.Source.Process.Should().Be("dig");
        e.Source.CgroupId.Should().Be(77);
        e.Destination.Ip.ToByteArray().Should().Equal(Server.GetAddressBytes());
        e.Destination.Port.Should().Be(53);
        e.Destination.Pid.Should().Be(0);
        tracker.Queries.Should().Be(1);
        tracker.Responses.Should().Be(1);
        _names.NamesFor(IPAddress.Parse("10.9.8.7")).Should().Equal("web.flowsec.test");
    }

    [Fact]
    public void Both_ends_on_this_node_give_one_event_attributed_on_both_sides()
    {
        var tracker = NewTracker();
        var query = DnsPacketBuilder.Query(7, "web.flowsec.test", 1).Build();
        var response = Response(7, "web.flowsec.test", "10.9.8.7");

        tracker.Observe(ClientSends(10 * Ms, pid: 100, comm: "dig", cgroup: 1001), query);
        tracker.Observe(ServerReceives(10 * Ms + 20_000, pid: 0, comm: "", cgroup: 2002), query);
        tracker.Observe(ServerSends(10 * Ms + 300_000, pid: 200, comm: "dnsmasq", cgroup: 2002), response);
        tracker.Observe(ClientReceives(10 * Ms + 320_000, pid: 100, comm: "dig", cgroup: 1001), response);
        tracker.Tick(20 * Ms + Timeout.Ticks * 100);

        var e = _events.Should().ContainSingle().Subject;
        e.Dns.LatencyUs.Should().Be(300, "from the first sighting of the query to the first of the response");
        e.Source.Pid.Should().Be(100);
        e.Source.CgroupId.Should().Be(1001);
        e.Destination.Pid.Should().Be(200);
        e.Destination.Process.Should().Be("dnsmasq");
        e.Destination.CgroupId.Should().Be(2002);
        tracker.Duplicates.Should().Be(2);
        tracker.Queries.Should().Be(1);
        tracker.Responses.Should().Be(1);
        tracker.Unanswered.Should().Be(0);
        tracker.Tracked.Should().Be(0, "the answered transaction is forgotten after its linger");
    }

    [Fact]
    public void Unanswered_query_is_reported_as_timeout_after_the_timeout()
    {
        var tracker = NewTracker();
        tracker.Observe(ClientSends(1000 * Ms), DnsPacketBuilder.Query(9, "slow.test", 28).Build());

        tracker.Tick(1000 * Ms + Timeout.Ticks * 100 - 1);
        _events.Should().BeEmpty();
        tracker.Tick(1000 * Ms + Timeout.Ticks * 100);

        var e = _events.Should().ContainSingle().Subject;
        e.Dns.Rcode.Should().Be("TIMEOUT");
        e.Dns.Query.Should().Be("slow.test");
        e.Dns.Qtype.Should().Be("AAAA");
        e.Dns.IsResponse.Should().BeFalse();
        e.Dns.LatencyUs.Should().Be(5_000_000);
        e.Dns.Answers.Should().BeEmpty();
        e.Source.Pid.Should().Be(4242);
        tracker.Unanswered.Should().Be(1);
        tracker.Tracked.Should().Be(0);
    }

    [Fact]
    public void Response_without_a_query_is_emitted_once_and_teaches_no_names()
    {
        var tracker = NewTracker();
        var response = Response(11, "web.flowsec.test", "10.9.8.7");

        tracker.Observe(ServerSends(5 * Ms, pid: 200, comm: "dnsmasq", cgroup: 2), response);
        tracker.Observe(ClientReceives(5 * Ms + 10_000), response);

        var e = _events.Should().ContainSingle().Subject;
        e.Dns.LatencyUs.Should().Be(0);
        e.Dns.Query.Should().Be("web.flowsec.test");
        e.Destination.Pid.Should().Be(200);
        tracker.Unmatched.Should().Be(1);
        tracker.Duplicates.Should().Be(1);
        _names.NamesFor(IPAddress.Parse("10.9.8.7")).Should().BeEmpty("an unsolicited response must not plant names");
    }

    [Fact]
    public void Response_with_another_question_does_not_answer_the_query()
    {
        var tracker = NewTracker();
        tracker.Observe(ClientSends(1 * Ms), DnsPacketBuilder.Query(12, "asked.test", 1).Build());

        tracker.Observe(ClientReceives(2 * Ms), Response(12, "spoofed.test", "10.6.6.6"));
        tracker.Tick(1 * Ms + Timeout.Ticks * 100);

        _events.Select(e => (e.Dns.Query, e.Dns.Rcode)).Should().Equal(("spoofed.test", "NOERROR"), ("asked.test", "TIMEOUT"));
        tracker.Unmatched.Should().Be(1);
        _names.NamesFor(IPAddress.Parse("10.6.6.6")).Should().BeEmpty();
    }

    [Fact]
    public void Different_ids_ports_and_servers_are_different_transactions()
    {
        var tracker = NewTracker();
        var other = IPAddress.Parse("10.200.1.3");
        tracker.Observe(ClientSends(1 * Ms), DnsPacketBuilder.Query(1, "a.test", 1).Build());
        tracker.Observe(ClientSends(1 * Ms) with { SourcePort = (ushort)(ClientPort + 1) }, DnsPacketBuilder.Query(1, "a.test", 1).Build());
        tracker.Observe(ClientSends(1 * Ms) with { Destination = other }, DnsPacketBuilder.Query(1, "a.test", 1).Build());
        tracker.Observe(ClientSends(1 * Ms), DnsPacketBuilder.Query(2, "a.test", 1).Build());

        tracker.Observe(ClientReceives(3 * Ms) with { Source = other }, Response(1, "a.test", "10.0.0.1"));

        tracker.Queries.Should().Be(4);
        var e = _events.Should().ContainSingle().Subject;
        e.Destination.Ip.ToByteArray().Should().Equal(other.GetAddressBytes());
        e.Dns.LatencyUs.Should().Be(2000);
        tracker.Tick(10 * Ms + Timeout.Ticks * 100);
        tracker.Unanswered.Should().Be(3);
    }

    [Fact]
    public void A_different_second_response_is_emitted_too()
    {
        var tracker = NewTracker();
        tracker.Observe(ClientSends(1 * Ms), DnsPacketBuilder.Query(3, "race.test", 1).Build());

        tracker.Observe(ClientReceives(2 * Ms), Response(3, "race.test", "10.0.0.1"));
        tracker.Observe(ClientReceives(3 * Ms), Response(3, "race.test", "10.0.0.66"));

        _events.Select(e => e.Dns.Answers.Single().Data).Should().Equal("10.0.0.1", "10.0.0.66");
        _events.Select(e => e.Dns.LatencyUs).Should().Equal(1000UL, 2000UL);
    }

    [Fact]
    public void Malformed_response_is_emitted_as_MALFORMED()
    {
        var tracker = NewTracker();
        tracker.Observe(ClientSends(1 * Ms), DnsPacketBuilder.Query(4, "evil.test", 1).Build());
        var looping = new DnsPacketBuilder(4, DnsPacketBuilder.ResponseFlags, 1, 1).Question("evil.test", 1)
            .U8(1).U8((byte)'x').Pointer(27).U16(1).U16(1).U32(0).U16(4).Bytes(1, 2, 3, 4).Build();

        tracker.Observe(ClientReceives(2 * Ms), looping);

        var e = _events.Should().ContainSingle().Subject;
        e.Dns.Rcode.Should().Be("MALFORMED");
        e.Dns.Query.Should().Be("evil.test");
        e.Dns.LatencyUs.Should().Be(1000);
        tracker.Malformed.Should().Be(1);
    }

    [Fact]
    public void Message_cut_by_the_capture_is_not_malformed()
    {
        var tracker = NewTracker();
        var b = new DnsPacketBuilder(5, DnsPacketBuilder.ResponseFlags, 1, 60).Question("big.test", 1);
        for (int i = 0; i < 60; i++)
        {
            b.A("big.test", $"10.1.0.{i}");
        }
        byte[] full = b.Build();
        tracker.Observe(ClientSends(1 * Ms), DnsPacketBuilder.Query(5, "big.test", 1).Build());

        tracker.Observe(ClientReceives(2 * Ms) with { MessageLength = full.Length }, full.AsSpan(0, 512));

        var e = _events.Should().ContainSingle().Subject;
        e.Dns.Rcode.Should().Be("NOERROR");
        e.Dns.Answers.Count.Should().BeInRange(25, 40);
        tracker.Malformed.Should().Be(0);
        tracker.CaptureTruncated.Should().Be(1);
        _names.NamesFor(IPAddress.Parse("10.1.0.0")).Should().Equal("big.test");
    }

    [Fact]
    public void Garbage_shorter_than_a_header_is_counted_and_dropped()
    {
        var tracker = NewTracker();

        tracker.Observe(ClientSends(1 * Ms), new byte[] { 1, 2, 3 });

        _events.Should().BeEmpty();
        tracker.Malformed.Should().Be(1);
        tracker.Tracked.Should().Be(0);
    }

    [Fact]
    public void Table_is_bounded_and_evictions_are_counted()
    {
        var tracker = new DnsTransactionTracker("node-a", Timeout, capacity: 3, _events.Add, _names);

        for (ushort id = 1; id <= 5; id++)
        {
            tracker.Observe(ClientSends(id * Ms), DnsPacketBuilder.Query(id, "a.test", 1).Build());
        }

        tracker.Tracked.Should().Be(3);
        tracker.Evicted.Should().Be(2);
        tracker.Observe(ClientReceives(10 * Ms), Response(1, "a.test", "10.0.0.1"));
        _events.Should().ContainSingle().Which.Dns.LatencyUs.Should().Be(0, "query 1 was evicted, so its response is unmatched");
        tracker.Observe(ClientReceives(10 * Ms), Response(5, "a.test", "10.0.0.5"));
        _events[^1].Dns.LatencyUs.Should().Be(5000);
    }

    [Fact]
    public void Extended_rcode_from_edns_is_named()
    {
        var tracker = NewTracker();
        tracker.Observe(ClientSends(1 * Ms), DnsPacketBuilder.Query(6, "old.test", 1).Build());
        // Header rcode 0 + OPT TTL with extended rcode 1 → 16 = BADVERS.
        var response = new DnsPacketBuilder(6, DnsPacketBuilder.ResponseFlags, 1, 0, 0, 1).Question("old.test", 1)
            .U8(0).U16(41).U16(1232).U32(0x0100_0000).U16(0).Build();

        tracker.Observe(ClientReceives(2 * Ms), response);

        _events.Should().ContainSingle().Which.Dns.Rcode.Should().Be("BADVERS");
    }

    private DnsTransactionTracker NewTracker() => new("node-a", Timeout, 1000, _events.Add, _names);

    private static byte[] Response(ushort id, string name, string address) =>
        new DnsPacketBuilder(id, DnsPacketBuilder.ResponseFlags, 1, 1).Question(name, 1).A(name, address).Build();

    private static DnsObservation ClientSends(long ts, uint pid = 4242, string comm = "dig", ulong cgroup = 77) =>
        new(ts, Egress: true, Client, ClientPort, Server, 53, pid, comm, cgroup, 0);

    private static DnsObservation ClientReceives(long ts, uint pid = 4242, string comm = "dig", ulong cgroup = 77) =>
        new(ts, Egress: false, Server, 53, Client, ClientPort, pid, comm, cgroup, 0);

    private static DnsObservation ServerReceives(long ts, uint pid, string comm, ulong cgroup) =>
        new(ts, Egress: false, Client, ClientPort, Server, 53, pid, comm, cgroup, 0);

    private static DnsObservation ServerSends(long ts, uint pid, string comm, ulong cgroup) =>
        new(ts, Egress: true, Server, 53, Client, ClientPort, pid, comm, cgroup, 0);
}
