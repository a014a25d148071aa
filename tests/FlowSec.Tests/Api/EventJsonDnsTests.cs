using System.Text.Json;
using FlowSec.Api.Json;
using FlowSec.Api.V1;

namespace FlowSec.Tests.Api;

/// <summary>The JSON shape of a DNS event's <c>dns</c> object.</summary>
public class EventJsonDnsTests
{
    [Theory]
    [InlineData("tcp")]
    [InlineData("udp")]
    public void Dns_transport_is_in_the_json(string transport)
    {
        var e = new Event { Type = EventType.Dns, Dns = new DnsLookup { Query = "web.flowsec.test", Qtype = "A", Rcode = "NOERROR", Transport = transport } };

        using var json = JsonDocument.Parse(EventJson.ToJson(e));

        json.RootElement.GetProperty("dns").GetProperty("transport").GetString().Should().Be(transport);
    }

    [Fact]
    public void An_event_stored_before_transport_existed_has_none()
    {
        var e = new Event { Type = EventType.Dns, Dns = new DnsLookup { Query = "old.example" } };

        using var json = JsonDocument.Parse(EventJson.ToJson(e));

        json.RootElement.GetProperty("dns").TryGetProperty("transport", out _).Should().BeFalse();
    }
}
