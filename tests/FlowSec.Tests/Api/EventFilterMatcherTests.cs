using System.Net;
using FlowSec.Api.Filters;
using FlowSec.Api.V1;
using Google.Protobuf;

namespace FlowSec.Tests.Api;

public sealed class EventFilterMatcherTests
{
    private static Event Flow(string srcPod, string srcIp, uint dstPort, string dstIp = "10.0.1.9", Verdict verdict = Verdict.Forwarded,
        string process = "curl", params string[] dstNames)
    {
        var e = new Event
        {
            Node = "n1",
            Type = EventType.Flow,
            Source = new Endpoint { Pod = srcPod, Namespace = "shop", Ip = ByteString.CopyFrom(IPAddress.Parse(srcIp).GetAddressBytes()), Process = process },
            Destination = new Endpoint { Pod = "db", Namespace = "data", Port = dstPort, Ip = ByteString.CopyFrom(IPAddress.Parse(dstIp).GetAddressBytes()) },
            Flow = new Flow { Protocol = Protocol.Tcp, Verdict = verdict },
        };
        e.Source.Labels["app"] = "web";
        e.Destination.Names.AddRange(dstNames);
        return e;
    }

    private static EventFilterMatcher Allow(EventFilter f) => new([f], []);

    [Fact]
    public void Fields_are_ANDed_values_ORed_and_filters_ORed()
    {
        var f = new EventFilter { SourcePod = { "web-1", "web-2" }, DestinationPort = { 5432 } };
        Allow(f).Matches(Flow("web-2", "10.0.0.2", 5432)).Should().BeTrue();
        Allow(f).Matches(Flow("web-3", "10.0.0.2", 5432)).Should().BeFalse("pod does not match");
        Allow(f).Matches(Flow("web-1", "10.0.0.2", 80)).Should().BeFalse("port does not match");
        new EventFilterMatcher([f, new EventFilter { DestinationPort = { 80 } }], []).Matches(Flow("web-3", "10.0.0.2", 80)).Should().BeTrue();
    }

    [Fact]
    public void Deny_wins_over_allow()
    {
        var m = new EventFilterMatcher([new EventFilter { Namespace = { "shop" } }], [new EventFilter { Verdict = { Verdict.Dropped } }]);
        m.Matches(Flow("web-1", "10.0.0.2", 80)).Should().BeTrue();
        m.Matches(Flow("web-1", "10.0.0.2", 80, verdict: Verdict.Dropped)).Should().BeFalse();
    }

    [Theory]
    [InlineData("10.0.0.0/24", true)]
    [InlineData("10.0.0.2", true)]
    [InlineData("10.0.1.0/24", true)] // destination side
    [InlineData("10.9.0.0/16", false)]
    [InlineData("10.0.0.0/31", false)]
    [InlineData("::ffff:10.0.0.2", true)]
    public void Ip_and_cidr_match_either_side(string cidr, bool expected) =>
        Allow(new EventFilter { Ip = { cidr } }).Matches(Flow("web-1", "10.0.0.2", 80)).Should().Be(expected);

    [Theory]
    [InlineData("api.example.com", true)]
    [InlineData("*.example.com", true)]
    [InlineData("*.other.com", false)]
    [InlineData("example.com", false)]
    public void Dns_names_match_exactly_or_by_suffix(string pattern, bool expected) =>
        Allow(new EventFilter { DnsName = { pattern } }).Matches(Flow("web-1", "10.0.0.2", 443, dstNames: "api.example.com")).Should().Be(expected);

    [Fact]
    public void Pods_can_be_named_with_their_namespace_and_labels_by_selector()
    {
        var e = Flow("web-1", "10.0.0.2", 80);
        Allow(new EventFilter { Pod = { "shop/web-1" } }).Matches(e).Should().BeTrue();
        Allow(new EventFilter { Pod = { "data/web-1" } }).Matches(e).Should().BeFalse();
        Allow(new EventFilter { Label = { "app=web" } }).Matches(e).Should().BeTrue();
        Allow(new EventFilter { Label = { "app" } }).Matches(e).Should().BeTrue();
        Allow(new EventFilter { Label = { "app=db" } }).Matches(e).Should().BeFalse();
    }

    [Theory]
    [InlineData("10.0.0.0/33")]
    [InlineData("not-an-ip")]
    [InlineData("10.0.0.0/x")]
    public void Bad_cidrs_are_rejected_with_a_clear_message(string cidr)
    {
        var act = () => Allow(new EventFilter { Ip = { cidr } });
        act.Should().Throw<ArgumentException>().WithMessage($"*{cidr}*");
    }

    [Theory]
    [InlineData("a*.example.com")]
    [InlineData("*example.com")]
    [InlineData("")]
    public void Bad_dns_patterns_are_rejected(string pattern)
    {
        var act = () => Allow(new EventFilter { DnsName = { pattern } });
        act.Should().Throw<ArgumentException>();
    }

    [Theory]
    [InlineData("API.Example.COM", "api.example.com", true)]
    [InlineData("api.example.com..", "API.EXAMPLE.COM.", true)]
    [InlineData("x.Example.com.", "*.EXAMPLE.com", true)]
    [InlineData("É.example.com", "é.example.com", false)] // ASCII case only, as ClickHouse's lower()
    [InlineData("example.com", "*.example.com", false)]
    public void Dns_names_ignore_ascii_case_and_trailing_dots_only(string name, string pattern, bool expected) =>
        Allow(new EventFilter { DnsName = { pattern } }).Matches(Flow("web-1", "10.0.0.2", 443, dstNames: name)).Should().Be(expected);

    [Fact]
    public void Pods_split_at_the_first_slash_and_no_address_is_never_in_a_range()
    {
        var e = Flow("a/b", "10.0.0.2", 80);
        Allow(new EventFilter { SourcePod = { "shop/a/b" } }).Matches(e).Should().BeTrue();
        Allow(new EventFilter { SourcePod = { "a/b" } }).Matches(e).Should().BeFalse("namespace a, pod b");
        e.Source.Ip = ByteString.CopyFrom(new byte[16]);
        Allow(new EventFilter { SourceIp = { "::/0" } }).Matches(e).Should().BeFalse(":: is stored for no address");
    }

    [Theory]
    [InlineData("port")]
    [InlineData("protocol")]
    [InlineData("pod")]
    [InlineData("long")]
    public void Values_that_cannot_be_typed_are_rejected(string what)
    {
        var f = what switch
        {
            "port" => new EventFilter { Port = { 70000 } },
            "protocol" => new EventFilter { Protocol = { (Protocol)42 } },
            "pod" => new EventFilter { Pod = { "shop/" } },
            _ => new EventFilter { Process = { new string('x', 2000) } },
        };
        var act = () => Allow(f);
        act.Should().Throw<ArgumentException>();
    }
}
