using FlowSec.Sensor.Export;

namespace FlowSec.Tests.Sensor.Export;

public sealed class RelayAddressesTests
{
    [Fact]
    public void A_comma_list_gives_relays_in_order()
    {
        RelayExporter.RelayAddresses(" http://127.0.0.1:4245 , http://127.0.0.1:4246,").Select(u => u.Port)
            .Should().Equal(4245, 4246);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("127.0.0.1:4245", "not a relay address")]
    [InlineData("http://127.0.0.1:4245,ftp://x", "'ftp://x' is not a relay address")]
    public void A_bad_address_is_named(string relay, string message)
    {
        var act = () => RelayExporter.RelayAddresses(relay);
        act.Should().Throw<ArgumentException>().WithMessage($"*{message}*");
    }
}
