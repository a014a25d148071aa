using System.Net;
using System.Net.Sockets;
using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Flows;

namespace FlowSec.Tests.Sensor;

public class FlowAssemblerTests
{
    private const long Offset = 1_700_000_000_000_000_000; // Unix ns at monotonic 0
    private const ulong Second = 1_000_000_000;
    private static readonly IPAddress Client = IPAddress.Parse("10.0.0.1");
    private static readonly IPAddress Server = IPAddress.Parse("10.0.0.2");

    private static FlowAssembler NewAssembler() => new("node-a", Offset, TimeSpan.FromSeconds(10));

    // The client's (connect()ing) socket while open: its socket-table entry, as the scan decodes it.
    private static TcpRecord ActiveOpen(ulong sock = 1, ulong start = 100 * Second - Second / 1000) => new(
        1000, 1001, AddressFamily.InterNetwork, TcpState.Established, TcpState.Established,
        0, start, 55, sock, IpAddress16.From(Client), IpAddress16.From(Server), 40000, 443, true, TcpState.SynSent,
        0, 0, 0, 0, 0, 0, "curl");

    private static TcpRecord ActiveClose(ulong sock = 1, ulong at = 103 * Second, TcpState from = TcpState.LastAck) =>
        ActiveOpen(sock) with
        {
            OldState = from,
            NewState = TcpState.Close,
            TimestampNs = at,
            // SYN and our FIN are acked (+2), the peer's FIN received (+1): see PayloadBytes.
            BytesAcked = 102,
            BytesReceived = 5001,
            SegsOut = 7,
            SegsIn = 9,
            SrttUs = 250,
            TotalRetrans = 1,
        };

    // The accepted socket on the server while open: the owner is only known from close().
    private static TcpRecord PassiveOpen(ulong sock = 2, ulong start = 100 * Second) => new(
        0, 0, AddressFamily.InterNetwork, TcpState.Established, TcpState.Established,
        0, start, 0, sock, IpAddress16.From(Server), IpAddress16.From(Client), 443, 40000, false, TcpState.SynRecv,
        0, 0, 0, 0, 0, 0, "");

    private static TcpRecord PassiveClose(ulong sock = 2, ulong at = 104 * Second) => PassiveOpen(sock) with
    {
        Tgid = 2000,
        Pid = 2001,
        CgroupId = 66,
        Comm = "nginx",
        OldState = TcpState.LastAck,
        NewState = TcpState.Close,
        TimestampNs = at,
        BytesAcked = 5001,   // 5000 + our FIN
        BytesReceived = 101, // 100 + the client's FIN
        SegsOut = 9,
        SegsIn = 7,
        SrttUs = 30,
    };

    [Fact]
    public void Active_connection_becomes_one_egress_flow_at_close()
    {
        var e = NewAssembler().Closed(ActiveClose());

        e.Type.Should().Be(EventType.Flow);
        e.Node.Should().Be("node-a");
        e.Capture.Should().Be("bpf");
        e.TimeUnixNano.Should().Be((ulong)Offset + 103 * Second);
        e.Source.Ip.ToByteArray().Should().Equal(Client.GetAddressBytes());
        e.Source.Port.Should().Be(40000);
        e.Source.Pid.Should().Be(1000);
        e.Source.Process.Should().Be("curl");
        e.Source.CgroupId.Should().Be(55);
        e.Destination.Ip.ToByteArray().Should().Equal(Server.GetAddressBytes());
        e.Destination.Port.Should().Be(443);
        e.Destination.Pid.Should().Be(0);
        e.Destination.Process.Should().BeEmpty();
        e.Flow.Protocol.Should().Be(Protocol.Tcp);
        e.Flow.State.Should().Be("closed");
        e.Flow.Direction.Should().Be("egress");
        e.Flow.Verdict.Should().Be(Verdict.Forwarded);
        e.Flow.DurationNs.Should().Be(3 * Second + Second / 1000); // from SYN_SENT, not ESTABLISHED
        e.Flow.BytesSent.Should().Be(100);
        e.Flow.BytesReceived.Should().Be(5000);
        e.Flow.PacketsSent.Should().Be(7);
        e.Flow.PacketsReceived.Should().Be(9);
        e.Flow.RttUs.Should().Be(250);
        e.Flow.Retransmits.Should().Be(1);
        e.Flow.SocketId.Should().Be(1);
    }

    [Fact]
    public void Accepted_connection_is_ingress_from_the_peer_with_counters_flipped()
    {
        var e = NewAssembler().Closed(PassiveClose());

        e.Flow.Direction.Should().Be("ingress");
        e.Source.Ip.ToByteArray().Should().Equal(Client.GetAddressBytes());
        e.Source.Port.Should().Be(40000);
        e.Source.Pid.Should().Be(0);
        e.Destination.Ip.ToByteArray().Should().Equal(Server.GetAddressBytes());
        e.Destination.Port.Should().Be(443);
        e.Destination.Pid.Should().Be(2000);
        e.Destination.Process.Should().Be("nginx");
        e.Destination.CgroupId.Should().Be(66);
        // Source → destination is client → server: what the server received.
        e.Flow.BytesSent.Should().Be(100);
        e.Flow.BytesReceived.Should().Be(5000);
        e.Flow.PacketsSent.Should().Be(7);
        e.Flow.PacketsReceived.Should().Be(9);
        e.Flow.State.Should().Be("closed");
        e.Flow.DurationNs.Should().Be(4 * Second);
    }

    [Fact]
    public void Server_pid_stays_empty_when_the_owner_was_never_seen()
    {
        var e = NewAssembler().Closed(PassiveClose() with { Tgid = 0, Pid = 0, Comm = "", CgroupId = 0 });

        e.Destination.Pid.Should().Be(0);
        e.Destination.Process.Should().BeEmpty();
        e.Destination.CgroupId.Should().Be(0);
    }

    [Fact]
    public void Connect_answered_by_rst_is_refused()
    {
        var close = ActiveClose() with
        {
            OldState = TcpState.SynSent,
            StartNs = 100 * Second,
            TimestampNs = 100 * Second + 200_000,
            BytesAcked = 0,
            BytesReceived = 0,
            SegsOut = 1,
            SegsIn = 1,
            TotalRetrans = 0,
        };

        var e = NewAssembler().Closed(close);

        e.Flow.State.Should().Be("refused");
        e.Flow.Direction.Should().Be("egress");
        e.Flow.DurationNs.Should().Be(200_000);
        e.Flow.BytesSent.Should().Be(0);
        e.Source.Pid.Should().Be(1000);
    }

    [Fact]
    public void Connect_that_retransmitted_its_syn_until_giving_up_is_a_timeout()
    {
        var close = ActiveClose() with { OldState = TcpState.SynSent, BytesAcked = 0, BytesReceived = 0, TotalRetrans = 6 };

        NewAssembler().Closed(close).Flow.State.Should().Be("timeout");
    }

    [Theory]
    [InlineData((int)TcpState.Established, "reset")]
    [InlineData((int)TcpState.CloseWait, "reset")]
    [InlineData((int)TcpState.FinWait1, "reset")]
    [InlineData((int)TcpState.SynRecv, "reset")]
    [InlineData((int)TcpState.FinWait2, "closed")]
    [InlineData((int)TcpState.LastAck, "closed")]
    [InlineData((int)TcpState.Closing, "closed")]
    [InlineData((int)TcpState.TimeWait, "closed")]
    public void Close_state_follows_the_state_before_close(int from, string expected)
    {
        NewAssembler().Closed(ActiveClose(from: (TcpState)from)).Flow.State.Should().Be(expected);
    }

    [Theory]
    // Abortive close: SYN counted, no FIN either way.
    [InlineData((int)TcpState.Established, 101ul, 5000ul, 100ul, 5000ul)]
    // Our FIN acked; the peer's FIN may or may not be counted, so bytes received are left alone.
    [InlineData((int)TcpState.FinWait2, 102ul, 5001ul, 100ul, 5001ul)]
    // Both FINs.
    [InlineData((int)TcpState.LastAck, 102ul, 5001ul, 100ul, 5000ul)]
    // The peer's FIN only, then an abortive close.
    [InlineData((int)TcpState.CloseWait, 101ul, 5001ul, 100ul, 5000ul)]
    public void Syn_and_fin_are_not_counted_as_payload(int from, ulong rawAcked, ulong rawReceived, ulong sent, ulong received)
    {
        var e = NewAssembler().Closed(ActiveClose(from: (TcpState)from) with { BytesAcked = rawAcked, BytesReceived = rawReceived });

        e.Flow.BytesSent.Should().Be(sent);
        e.Flow.BytesReceived.Should().Be(received);
    }

    [Fact]
    public void Accepted_side_has_no_syn_to_subtract()
    {
        // The accepted socket starts after its SYN-ACK, so only FINs are in its counters.
        var e = NewAssembler().Closed(PassiveClose() with { OldState = TcpState.Established, BytesAcked = 5000, BytesReceived = 100 });

        e.Flow.BytesSent.Should().Be(100);
        e.Flow.BytesReceived.Should().Be(5000);
    }

    [Fact]
    public void Socket_that_predates_the_sensor_has_unknown_direction_and_no_process()
    {
        var close = ActiveClose() with
        {
            Tgid = 0,
            Pid = 0,
            Comm = "",
            CgroupId = 0,
            StartNs = 0,
            Initiator = false,
            FirstState = TcpState.Unknown,
        };

        var e = NewAssembler().Closed(close);

        e.Flow.Direction.Should().Be("unknown");
        e.Source.Port.Should().Be(40000); // local side first, as reported
        e.Source.Pid.Should().Be(0);
        e.Flow.DurationNs.Should().Be(0);
    }

    [Fact]
    public void Ipv4_mapped_ipv6_addresses_are_reported_as_ipv4()
    {
        var close = ActiveClose() with
        {
            Family = AddressFamily.InterNetworkV6,
            LocalAddress = IpAddress16.From(Client.MapToIPv6()),
            RemoteAddress = IpAddress16.From(Server.MapToIPv6()),
        };

        var e = NewAssembler().Closed(close);

        e.Source.Ip.Length.Should().Be(4);
        e.Source.Ip.ToByteArray().Should().Equal(Client.GetAddressBytes());
        e.Destination.Ip.ToByteArray().Should().Equal(Server.GetAddressBytes());
    }

    [Fact]
    public void Ipv6_addresses_keep_16_bytes()
    {
        var v6 = IPAddress.Parse("fd00::7");
        var e = NewAssembler().Closed(ActiveClose() with { Family = AddressFamily.InterNetworkV6, RemoteAddress = IpAddress16.From(v6) });

        e.Destination.Ip.ToByteArray().Should().Equal(v6.GetAddressBytes());
    }

    [Fact]
    public void Each_flow_carries_its_own_addresses_when_the_assembler_shares_them()
    {
        // More distinct peers than the assembler keeps shared copies of, IPv4, IPv6 and IPv4-mapped
        // mixed, each seen twice: a stale or crossed shared copy would give a flow another's address.
        var assembler = NewAssembler();
        var peers = Enumerable.Range(0, 5000).Select(i => (i % 3) switch
        {
            0 => new IPAddress(new byte[] { 10, 1, (byte)(i >> 8), (byte)i }),
            1 => IPAddress.Parse($"fd00::{i:x}"),
            _ => new IPAddress(new byte[] { 10, 2, (byte)(i >> 8), (byte)i }).MapToIPv6(),
        }).ToList();

        foreach (var peer in peers.Concat(peers))
        {
            var family = peer.AddressFamily;
            var e = assembler.Closed(ActiveClose() with { Family = family, LocalAddress = IpAddress16.From(Client), RemoteAddress = IpAddress16.From(peer) });
            var expected = peer.IsIPv4MappedToIPv6 ? peer.MapToIPv4().GetAddressBytes() : peer.GetAddressBytes();
            e.Destination.Ip.ToByteArray().Should().Equal(expected, $"the flow to {peer}");
            e.Source.Ip.ToByteArray().Should().Equal(Client.GetAddressBytes());
        }
    }

    [Fact]
    public void Connection_open_for_the_interval_is_reported_as_established()
    {
        var assembler = NewAssembler();
        ulong start = 100 * Second - Second / 1000;

        assembler.Established(ActiveOpen(), start + 10 * Second - 1).Should().BeNull("open for less than the interval");
        var e = assembler.Established(ActiveOpen(), 110 * Second)!;

        e.Should().NotBeNull();
        e.Type.Should().Be(EventType.Flow);
        e.Node.Should().Be("node-a");
        e.TimeUnixNano.Should().Be((ulong)Offset + 110 * Second);
        e.Flow.State.Should().Be("established");
        e.Flow.Direction.Should().Be("egress");
        e.Flow.DurationNs.Should().Be(110 * Second - start);
        e.Flow.SocketId.Should().Be(1);
        e.Source.Ip.ToByteArray().Should().Equal(Client.GetAddressBytes());
        e.Source.Port.Should().Be(40000);
        e.Source.Pid.Should().Be(1000);
        e.Source.Process.Should().Be("curl");
        e.Source.CgroupId.Should().Be(55);
        e.Destination.Port.Should().Be(443);
        // Counters are read at close only.
        e.Flow.BytesSent.Should().Be(0);
        e.Flow.PacketsReceived.Should().Be(0);
        e.Flow.RttUs.Should().Be(0);
    }

    [Fact]
    public void A_long_lived_connection_is_reported_at_every_scan_with_its_duration_so_far()
    {
        var assembler = NewAssembler();
        ulong start = 100 * Second - Second / 1000;

        var durations = new[] { 110ul, 120ul, 130ul }
            .Select(t => assembler.Established(ActiveOpen(), t * Second)!.Flow.DurationNs);

        durations.Should().Equal(110 * Second - start, 120 * Second - start, 130 * Second - start);
    }

    [Fact]
    public void Accepted_connection_is_reported_as_ingress_before_its_server_process_is_known()
    {
        var e = NewAssembler().Established(PassiveOpen(), 115 * Second)!;

        e.Flow.State.Should().Be("established");
        e.Flow.Direction.Should().Be("ingress");
        e.Flow.DurationNs.Should().Be(15 * Second);
        e.Source.Ip.ToByteArray().Should().Equal(Client.GetAddressBytes());
        e.Source.Port.Should().Be(40000);
        e.Destination.Port.Should().Be(443);
        // The owner is captured when the server closes the socket (process context).
        e.Destination.Pid.Should().Be(0);
        e.Destination.Process.Should().BeEmpty();
    }

    [Fact]
    public void A_flow_built_into_a_handed_back_event_equals_one_built_fresh()
    {
        // The TCP capture hands events the queue encoded back to the assembler, which builds the
        // next flow into them: nothing of the earlier flow, nor anything enrichment added, may stay.
        var records = new[] { ActiveClose(), PassiveClose(), PassiveOpen(sock: 9) with { Tgid = 0, Comm = "" }, ActiveClose(sock: 3, from: TcpState.SynSent) };
        foreach (var earlier in records)
        {
            foreach (var next in records)
            {
                var assembler = NewAssembler();
                var used = assembler.Closed(earlier);
                SetEveryField(used);
                assembler.Reuse(used);

                var reused = assembler.Closed(next);

                reused.Should().BeSameAs(used, "the handed-back event carries the next flow");
                reused.Should().Be(NewAssembler().Closed(next), "from {0} to {1}", earlier.SockId, next.SockId);
                assembler.Reuse(reused);
                var open = ActiveOpen(sock: 5, start: Second);
                assembler.Established(open, 100 * Second).Should().Be(NewAssembler().Established(open, 100 * Second));
            }
        }
    }

    // Every field of the event, its endpoints and its flow set to something other than what a
    // flow would have, through the descriptors: a field added to the schema later is covered too.
    private static void SetEveryField(Google.Protobuf.IMessage message)
    {
        foreach (var field in message.Descriptor.Fields.InDeclarationOrder())
        {
            var accessor = field.Accessor;
            if (field.IsMap)
            {
                ((System.Collections.IDictionary)accessor.GetValue(message))["stale-key"] = "stale";
                continue;
            }
            if (field.IsRepeated)
            {
                ((System.Collections.IList)accessor.GetValue(message)).Add("stale");
                continue;
            }
            switch (field.FieldType)
            {
                case Google.Protobuf.Reflection.FieldType.Message:
                    var nested = accessor.GetValue(message) as Google.Protobuf.IMessage ?? field.MessageType.Parser.ParseFrom([]);
                    if (field.MessageType == Endpoint.Descriptor || field.MessageType == Flow.Descriptor)
                    {
                        SetEveryField(nested);
                    }
                    accessor.SetValue(message, nested);
                    break;
                case Google.Protobuf.Reflection.FieldType.String:
                    accessor.SetValue(message, "stale");
                    break;
                case Google.Protobuf.Reflection.FieldType.Bytes:
                    accessor.SetValue(message, Google.Protobuf.ByteString.CopyFrom(9, 9, 9, 9));
                    break;
                case Google.Protobuf.Reflection.FieldType.Enum:
                    accessor.SetValue(message, 2);
                    break;
                case Google.Protobuf.Reflection.FieldType.UInt32 or Google.Protobuf.Reflection.FieldType.Fixed32:
                    accessor.SetValue(message, 77u);
                    break;
                case Google.Protobuf.Reflection.FieldType.UInt64 or Google.Protobuf.Reflection.FieldType.Fixed64:
                    accessor.SetValue(message, 77ul);
                    break;
                case Google.Protobuf.Reflection.FieldType.Int32:
                    accessor.SetValue(message, 77);
                    break;
                case Google.Protobuf.Reflection.FieldType.Int64:
                    accessor.SetValue(message, 77L);
                    break;
                case Google.Protobuf.Reflection.FieldType.Bool:
                    accessor.SetValue(message, true);
                    break;
                default:
                    throw new InvalidOperationException($"{message.Descriptor.Name}.{field.Name}: type {field.FieldType} not covered by this test");
            }
        }
    }
}
