using System.Net;
using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor.Udp;

/// <summary>How kernel flow-table drains become UDP flow events (no kernel needed).</summary>
public class UdpFlowTableTests
{
    private static readonly TimeSpan Idle = TimeSpan.FromSeconds(1);
    private const long Second = 1_000_000_000;

    [Fact]
    public void First_drain_reports_totals_oriented_by_the_first_packet()
    {
        var table = new UdpFlowTable("n1", unixOffsetNs: 1_000, Idle);
        var key = Key("10.0.0.1", 5000, "10.0.0.2", 53, cgroup: 77);
        var stats = Stats(first: 10 * Second, last: 10 * Second + 500, FlowDir.Egress, bytesOut: 300, packetsOut: 3, bytesIn: 150, packetsIn: 2);

        table.BeginPass();
        var e = table.Observe(key, stats, 10 * Second + 600, out bool idle);
        table.EndPass();

        idle.Should().BeFalse();
        e.Should().NotBeNull();
        e!.Type.Should().Be(EventType.Flow);
        e.Node.Should().Be("n1");
        e.TimeUnixNano.Should().Be((ulong)(10 * Second + 500 + 1_000));
        e.Flow.Protocol.Should().Be(Protocol.Udp);
        e.Flow.State.Should().Be("active");
        e.Flow.Direction.Should().Be("egress");
        e.Flow.Verdict.Should().Be(Verdict.Forwarded);
        e.Flow.DurationNs.Should().Be(500);
        e.Source.Ip.ToByteArray().Should().Equal(IPAddress.Parse("10.0.0.1").GetAddressBytes());
        e.Source.Port.Should().Be(5000);
        e.Source.CgroupId.Should().Be(77);
        e.Source.Pid.Should().Be(0, "cgroup_skb does not know the process");
        e.Destination.Ip.ToByteArray().Should().Equal(IPAddress.Parse("10.0.0.2").GetAddressBytes());
        e.Destination.Port.Should().Be(53);
        e.Destination.CgroupId.Should().Be(0);
        (e.Flow.BytesSent, e.Flow.PacketsSent, e.Flow.BytesReceived, e.Flow.PacketsReceived).Should().Be((300ul, 3ul, 150ul, 2ul));
        table.EntriesSeen.Should().Be(1);
    }

    [Fact]
    public void A_flow_first_seen_receiving_is_ingress_with_the_remote_side_as_source()
    {
        var table = new UdpFlowTable("n1", 0, Idle);
        var key = Key("fd00::2", 53, "fd00::1", 40000, cgroup: 9);
        var stats = Stats(first: Second, last: Second, FlowDir.Ingress, bytesOut: 80, packetsOut: 1, bytesIn: 30, packetsIn: 1);

        table.BeginPass();
        var e = table.Observe(key, stats, Second, out _)!;

        e.Flow.Direction.Should().Be("ingress");
        e.Source.Ip.ToByteArray().Should().Equal(IPAddress.Parse("fd00::1").GetAddressBytes());
        e.Source.Port.Should().Be(40000);
        e.Source.CgroupId.Should().Be(0);
        e.Destination.Ip.ToByteArray().Should().Equal(IPAddress.Parse("fd00::2").GetAddressBytes());
        e.Destination.Port.Should().Be(53);
        e.Destination.CgroupId.Should().Be(9);
        // Source → destination is what the local socket received.
        (e.Flow.BytesSent, e.Flow.PacketsSent, e.Flow.BytesReceived, e.Flow.PacketsReceived).Should().Be((30ul, 1ul, 80ul, 1ul));
    }

    [Fact]
    public void Later_drains_report_deltas_and_nothing_without_traffic()
    {
        var table = new UdpFlowTable("n1", 0, TimeSpan.FromSeconds(10));
        var key = Key("10.0.0.1", 5000, "10.0.0.2", 53);

        table.BeginPass();
        table.Observe(key, Stats(Second, Second, FlowDir.Egress, 100, 1, 0, 0), Second, out _).Should().NotBeNull();
        table.EndPass();
        table.BeginPass();
        table.Observe(key, Stats(Second, Second, FlowDir.Egress, 100, 1, 0, 0), 2 * Second, out _).Should().BeNull("no traffic since");
        table.EndPass();
        table.BeginPass();
        var e = table.Observe(key, Stats(Second, 3 * Second, FlowDir.Egress, 250, 3, 40, 1), 3 * Second, out _)!;
        table.EndPass();

        (e.Flow.BytesSent, e.Flow.PacketsSent, e.Flow.BytesReceived, e.Flow.PacketsReceived).Should().Be((150ul, 2ul, 40ul, 1ul));
        e.Flow.DurationNs.Should().Be((ulong)(2 * Second), "duration runs from the flow's first packet");
        table.Evicted.Should().Be(0);
        table.Count.Should().Be(1);
    }

    [Fact]
    public void Idle_entries_are_flagged_and_their_final_values_reported_on_removal()
    {
        var table = new UdpFlowTable("n1", 0, Idle);
        var key = Key("10.0.0.1", 5000, "10.0.0.2", 53);
        table.BeginPass();
        table.Observe(key, Stats(Second, Second, FlowDir.Egress, 100, 1, 0, 0), Second, out _);
        table.EndPass();

        table.BeginPass();
        table.Observe(key, Stats(Second, Second, FlowDir.Egress, 100, 1, 0, 0), 3 * Second, out bool idle).Should().BeNull();
        idle.Should().BeTrue();
        // A reply arrived between the read and the atomic delete: it must not be lost.
        var e = table.Remove(key, Stats(Second, 3 * Second, FlowDir.Egress, 100, 1, 20, 1));
        table.EndPass();

        e.Should().NotBeNull();
        (e!.Flow.BytesReceived, e.Flow.PacketsReceived, e.Flow.PacketsSent).Should().Be((20ul, 1ul, 0ul));
        table.Count.Should().Be(0);
        table.Expired.Should().Be(1);
        table.Evicted.Should().Be(0);
    }

    [Fact]
    public void Entries_gone_from_the_kernel_count_as_evicted_and_a_new_incarnation_starts_over()
    {
        var table = new UdpFlowTable("n1", 0, TimeSpan.FromSeconds(10));
        var a = Key("10.0.0.1", 5000, "10.0.0.2", 53);
        var b = Key("10.0.0.1", 5001, "10.0.0.2", 53);
        table.BeginPass();
        table.Observe(a, Stats(Second, Second, FlowDir.Egress, 500, 5, 0, 0), Second, out _);
        table.Observe(b, Stats(Second, Second, FlowDir.Egress, 100, 1, 0, 0), Second, out _);
        table.EndPass();

        table.BeginPass();
        // a was evicted and recreated (new first_ns); b vanished.
        var e = table.Observe(a, Stats(2 * Second, 2 * Second, FlowDir.Ingress, 0, 0, 70, 2), 2 * Second, out _)!;
        table.EndPass().Should().Be(1);

        e.Flow.Direction.Should().Be("ingress");
        (e.Flow.BytesSent, e.Flow.PacketsSent).Should().Be((70ul, 2ul));
        table.Evicted.Should().Be(2);
        table.EntriesSeen.Should().Be(3);
        table.Count.Should().Be(1);
    }

    [Fact]
    public void Keys_compare_by_content()
    {
        Key("10.0.0.1", 1, "10.0.0.2", 2, 5).Should().Be(Key("10.0.0.1", 1, "10.0.0.2", 2, 5));
        Key("10.0.0.1", 1, "10.0.0.2", 2, 5).GetHashCode().Should().Be(Key("10.0.0.1", 1, "10.0.0.2", 2, 5).GetHashCode());
        Key("10.0.0.1", 1, "10.0.0.2", 2, 5).Should().NotBe(Key("10.0.0.1", 1, "10.0.0.3", 2, 5));
        Key("10.0.0.1", 1, "10.0.0.2", 2, 5).Should().NotBe(Key("10.0.0.1", 1, "10.0.0.2", 2, 6));
    }

    internal static unsafe FsUdpFlowKey Key(string local, ushort localPort, string remote, ushort remotePort, ulong cgroup = 1)
    {
        var l = IPAddress.Parse(local);
        var key = new FsUdpFlowKey
        {
            cgroup_id = cgroup,
            local_port = localPort,
            remote_port = remotePort,
            family = l.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? KernelAddress.AfInet : KernelAddress.AfInet6,
            protocol = 17,
        };
        l.GetAddressBytes().CopyTo(new Span<byte>(key.local_addr, 16));
        IPAddress.Parse(remote).GetAddressBytes().CopyTo(new Span<byte>(key.remote_addr, 16));
        return key;
    }

    private static FsUdpFlowStats Stats(long first, long last, FlowDir dir, ulong bytesOut, ulong packetsOut, ulong bytesIn, ulong packetsIn) => new()
    {
        first_ns = (ulong)first,
        last_ns = (ulong)last,
        first_dir = (byte)dir,
        bytes_egress = bytesOut,
        packets_egress = packetsOut,
        bytes_ingress = bytesIn,
        packets_ingress = packetsIn,
    };
}
