using System.Net;
using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor.Drops;

/// <summary>How a drained drop aggregate becomes a flow event (no kernel needed).</summary>
public class DropEventsTests
{
    private static readonly DropReasons Reasons = new([new("SKB_DROP_REASON_NETFILTER_DROP", 12), new("SKB_DROP_REASON_SOCKET_RCVBUFF", 6)]);

    [Fact]
    public void Received_packet_dropped_by_netfilter()
    {
        var key = Key("10.1.0.1", 40000, "10.1.0.2", 9999, protocol: 6, reason: 12, FlowDir.Ingress, cgroup: 0);
        var stats = new FsDropStats { first_ns = 1_000, last_ns = 5_000, packets = 3, bytes = 180, ifindex = 2 };

        var e = DropEvents.Build(key, stats, Reasons, "n1", unixOffsetNs: 100);

        e.Type.Should().Be(EventType.Flow);
        e.Node.Should().Be("n1");
        e.Capture.Should().Be("bpf");
        e.TimeUnixNano.Should().Be(5_100);
        e.Flow.Verdict.Should().Be(Verdict.Dropped);
        e.Flow.DropReason.Should().Be("NETFILTER_DROP");
        e.Flow.Protocol.Should().Be(Protocol.Tcp);
        e.Flow.State.Should().Be("dropped");
        e.Flow.Direction.Should().Be("ingress");
        e.Flow.DurationNs.Should().Be(4_000);
        (e.Flow.PacketsSent, e.Flow.BytesSent).Should().Be((3ul, 180ul));
        e.Source.Ip.ToByteArray().Should().Equal(IPAddress.Parse("10.1.0.1").GetAddressBytes());
        e.Source.Port.Should().Be(40000);
        e.Destination.Ip.ToByteArray().Should().Equal(IPAddress.Parse("10.1.0.2").GetAddressBytes());
        e.Destination.Port.Should().Be(9999);
    }

    [Fact]
    public void The_socket_cgroup_goes_to_the_local_side()
    {
        var sent = DropEvents.Build(Key("fd00::1", 5000, "fd00::2", 53, 17, 99, FlowDir.Egress, cgroup: 42), default, Reasons, "n", 0);
        var received = DropEvents.Build(Key("fd00::2", 53, "fd00::1", 5000, 17, 6, FlowDir.Ingress, cgroup: 43), default, Reasons, "n", 0);

        (sent.Source.CgroupId, sent.Destination.CgroupId).Should().Be((42ul, 0ul));
        sent.Flow.Direction.Should().Be("egress");
        sent.Flow.DropReason.Should().Be("UNKNOWN_99");
        sent.Source.Ip.Length.Should().Be(16);
        (received.Source.CgroupId, received.Destination.CgroupId).Should().Be((0ul, 43ul));
        received.Flow.DropReason.Should().Be("SOCKET_RCVBUFF");
        received.Flow.Protocol.Should().Be(Protocol.Udp);
    }

    [Theory]
    [InlineData(1, KernelAddress.AfInet, Protocol.Icmp)]
    [InlineData(58, KernelAddress.AfInet6, Protocol.Icmp)]
    [InlineData(58, KernelAddress.AfInet, Protocol.Unspecified)]
    [InlineData(47, KernelAddress.AfInet, Protocol.Unspecified)]
    public void Protocols_map_to_the_event_model(byte ipProtocol, byte family, Protocol expected) =>
        DropEvents.ProtocolOf(ipProtocol, family).Should().Be(expected);

    private static unsafe FsDropKey Key(string source, ushort sport, string destination, ushort dport, byte protocol, uint reason, FlowDir direction, ulong cgroup)
    {
        var s = IPAddress.Parse(source);
        var key = new FsDropKey
        {
            cgroup_id = cgroup,
            sport = sport,
            dport = dport,
            reason = reason,
            family = s.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? KernelAddress.AfInet : KernelAddress.AfInet6,
            protocol = protocol,
            direction = (byte)direction,
        };
        s.GetAddressBytes().CopyTo(new Span<byte>(key.saddr, 16));
        IPAddress.Parse(destination).GetAddressBytes().CopyTo(new Span<byte>(key.daddr, 16));
        return key;
    }
}
