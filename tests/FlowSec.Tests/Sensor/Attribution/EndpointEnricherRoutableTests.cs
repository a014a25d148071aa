using System.Net;
using FlowSec.Sensor.Attribution;
using Google.Protobuf;

namespace FlowSec.Tests.Sensor.Attribution;

public sealed class EndpointEnricherRoutableTests
{
    [Theory]
    [InlineData("10.251.0.1")]
    [InlineData("127.0.0.1")]
    [InlineData("127.255.3.4")]
    [InlineData("0.0.0.0")]
    [InlineData("0.0.0.1")]
    [InlineData("255.255.255.255")]
    [InlineData("::")]
    [InlineData("::1")]
    [InlineData("::2")]
    [InlineData("fe80::1")]
    [InlineData("2001:db8::1")]
    [InlineData("::ffff:127.0.0.1")]
    [InlineData("::ffff:10.0.0.1")]
    [InlineData("::ffff:0.0.0.0")]
    [InlineData("::127.0.0.1")]
    public void Byte_check_agrees_with_IPAddress(string text)
    {
        var address = IPAddress.Parse(text);
        bool expected = !IPAddress.IsLoopback(address) && !address.Equals(IPAddress.Any) && !address.Equals(IPAddress.IPv6Any);
        EndpointEnricher.IsRoutable(ByteString.CopyFrom(address.GetAddressBytes())).Should().Be(expected, text);
    }

    [Fact]
    public void Addresses_of_other_lengths_are_not_routable()
    {
        EndpointEnricher.IsRoutable(ByteString.Empty).Should().BeFalse();
        EndpointEnricher.IsRoutable(ByteString.CopyFrom(1, 2, 3)).Should().BeFalse();
    }
}
