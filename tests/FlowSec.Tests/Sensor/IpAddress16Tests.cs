using System.Net;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor;

public class IpAddress16Tests
{
    [Theory]
    [InlineData("10.1.2.3")]
    [InlineData("0.0.0.0")]
    [InlineData("255.255.255.255")]
    [InlineData("::")]
    [InlineData("::1")]
    [InlineData("fd00::7")]
    [InlineData("2001:db8:ffff:1:2:3:4:5")]
    [InlineData("::ffff:10.1.2.3")]
    public void Round_trips_to_the_same_IPAddress_and_text(string text)
    {
        var address = IPAddress.Parse(text);

        var value = IpAddress16.From(address);

        value.ToIPAddress().Should().Be(address);
        value.ToIPAddress().AddressFamily.Should().Be(address.AddressFamily);
        value.ToString().Should().Be(address.ToString());
        value.IsIPv4MappedToIPv6.Should().Be(address.IsIPv4MappedToIPv6);
    }

    [Fact]
    public void Reads_what_a_bpf_program_stored_ipv4_from_the_first_four_of_sixteen_bytes()
    {
        byte[] bytes = [10, 9, 8, 7, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee];

        IpAddress16.FromKernel(isIPv4: true, bytes).ToIPAddress().Should().Be(IPAddress.Parse("10.9.8.7"));
        IpAddress16.FromKernel(isIPv4: false, bytes).ToIPAddress()
            .Should().Be(new IPAddress(bytes), "all 16 bytes are IPv6");
    }

    [Theory]
    [InlineData("10.1.2.3", new byte[] { 10, 1, 2, 3 })]
    [InlineData("::ffff:10.1.2.3", new byte[] { 10, 1, 2, 3 })]
    [InlineData("fd00::7", new byte[] { 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7 })]
    [InlineData("::ffff:0:a01:203", new byte[] { 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0x0a, 0x01, 0x02, 0x03 })]
    public void Flow_bytes_are_four_for_ipv4_and_its_mapped_form_else_sixteen(string text, byte[] expected)
    {
        Span<byte> written = stackalloc byte[16];

        int length = IpAddress16.From(IPAddress.Parse(text)).WriteFlowBytes(written);

        written[..length].ToArray().Should().Equal(expected);
    }

    [Fact]
    public void An_ipv4_address_and_its_mapped_form_share_a_value_but_are_not_equal()
    {
        var v4 = IpAddress16.From(IPAddress.Parse("10.1.2.3"));
        var mapped = IpAddress16.From(IPAddress.Parse("::ffff:10.1.2.3"));

        mapped.Value.Should().Be(v4.Value, "one cache key for both forms");
        mapped.Should().NotBe(v4);
        IpAddress16.From(IPAddress.Parse("10.1.2.3")).Should().Be(v4);
    }
}
