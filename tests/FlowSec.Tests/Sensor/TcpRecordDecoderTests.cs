using System.Net;
using System.Net.Sockets;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor;

public class TcpRecordDecoderTests
{
    [Fact]
    public void Decodes_an_ipv4_close_record_field_by_field()
    {
        var bytes = new TcpRecordBytes().ToBytes();

        TcpRecordDecoder.TryDecode(bytes, out var r).Should().Be(DecodeResult.Ok);

        r.Tgid.Should().Be(4242);
        r.Pid.Should().Be(4243);
        r.Family.Should().Be(AddressFamily.InterNetwork);
        r.OldState.Should().Be(TcpState.LastAck);
        r.NewState.Should().Be(TcpState.Close);
        r.TimestampNs.Should().Be(5_000_000_000);
        r.StartNs.Should().Be(4_000_000_000);
        r.CgroupId.Should().Be(77);
        r.SockId.Should().Be(0xffff_8880_1234_5678);
        r.LocalAddress.ToIPAddress().Should().Be(IPAddress.Parse("10.1.2.3"));
        r.RemoteAddress.ToIPAddress().Should().Be(IPAddress.Parse("10.9.8.7"));
        r.LocalAddress.ToIPAddress().AddressFamily.Should().Be(AddressFamily.InterNetwork);
        r.LocalPort.Should().Be(43210);
        r.RemotePort.Should().Be(443);
        r.Initiator.Should().BeTrue();
        r.FirstState.Should().Be(TcpState.SynSent);
        r.BytesAcked.Should().Be(1234);
        r.BytesReceived.Should().Be(56789);
        r.SegsOut.Should().Be(11);
        r.SegsIn.Should().Be(22);
        r.SrttUs.Should().Be(345);
        r.TotalRetrans.Should().Be(3);
        r.Comm.Should().Be("curl");
    }

    [Fact]
    public void Decodes_an_ipv6_close_record_of_an_accepted_socket()
    {
        var bytes = new TcpRecordBytes
        {
            Family = 10,
            OldState = 9,
            Local = IPAddress.Parse("fd00::1"),
            Remote = IPAddress.Parse("2001:db8::beef"),
            Initiator = 0,
            FirstState = 3,
        }.ToBytes();

        TcpRecordDecoder.TryDecode(bytes, out var r).Should().Be(DecodeResult.Ok);

        r.Family.Should().Be(AddressFamily.InterNetworkV6);
        r.OldState.Should().Be(TcpState.LastAck);
        r.NewState.Should().Be(TcpState.Close);
        r.LocalAddress.ToIPAddress().Should().Be(IPAddress.Parse("fd00::1"));
        r.RemoteAddress.ToIPAddress().Should().Be(IPAddress.Parse("2001:db8::beef"));
        r.Initiator.Should().BeFalse();
        r.FirstState.Should().Be(TcpState.SynRecv);
    }

    [Fact]
    public void Decodes_a_socket_table_entry_as_an_open_connection_without_counters()
    {
        var entry = new TcpSocketBytes().ToSocket();

        TcpRecordDecoder.TryDecode(0xffff_8880_aaaa_0000, entry, 9_000_000_000, out var r).Should().Be(DecodeResult.Ok);

        r.SockId.Should().Be(0xffff_8880_aaaa_0000);
        r.TimestampNs.Should().Be(9_000_000_000, "when the entry was read");
        r.StartNs.Should().Be(4_000_000_000);
        r.CgroupId.Should().Be(77);
        r.Tgid.Should().Be(4242);
        r.Pid.Should().Be(4243);
        r.Family.Should().Be(AddressFamily.InterNetwork);
        r.LocalAddress.ToIPAddress().Should().Be(IPAddress.Parse("10.1.2.3"));
        r.RemoteAddress.ToIPAddress().Should().Be(IPAddress.Parse("10.9.8.7"));
        r.LocalPort.Should().Be(43210);
        r.RemotePort.Should().Be(443);
        r.Initiator.Should().BeTrue();
        r.FirstState.Should().Be(TcpState.SynSent);
        r.OldState.Should().Be(TcpState.Established);
        r.NewState.Should().Be(TcpState.Established);
        r.Comm.Should().Be("curl");
        (r.BytesAcked, r.BytesReceived, r.SegsOut, r.SegsIn, r.SrttUs, r.TotalRetrans).Should().Be((0ul, 0ul, 0u, 0u, 0u, 0u));
    }

    [Fact]
    public void Decodes_an_ipv6_socket_table_entry()
    {
        var entry = new TcpSocketBytes
        {
            Family = 10,
            Local = IPAddress.Parse("fd00::1"),
            Remote = IPAddress.Parse("2001:db8::beef"),
            Initiator = 0,
            FirstState = 3,
            Tgid = 0,
            Comm = "",
        }.ToSocket();

        TcpRecordDecoder.TryDecode(1, entry, 1, out var r).Should().Be(DecodeResult.Ok);

        r.LocalAddress.ToIPAddress().Should().Be(IPAddress.Parse("fd00::1"));
        r.RemoteAddress.ToIPAddress().Should().Be(IPAddress.Parse("2001:db8::beef"));
        r.Initiator.Should().BeFalse();
        r.Tgid.Should().Be(0);
        r.Comm.Should().BeEmpty();
    }

    [Fact]
    public void A_socket_still_connecting_has_no_tuple_and_is_not_decoded()
    {
        // SYN_SENT: the entry holds the owner, but ports are assigned and the tuple written at ESTABLISHED.
        var entry = new TcpSocketBytes { Established = 0, Family = 0 }.ToSocket();

        TcpRecordDecoder.TryDecode(1, entry, 1, out var r).Should().Be(DecodeResult.NotEstablished);
        r.Should().Be(default(TcpRecord));
    }

    [Fact]
    public void A_socket_table_entry_with_an_unknown_family_is_rejected()
    {
        var entry = new TcpSocketBytes { Family = 17 }.ToSocket();

        TcpRecordDecoder.TryDecode(1, entry, 1, out _).Should().Be(DecodeResult.UnknownFamily);
    }

    [Fact]
    public void Ipv4_uses_only_the_first_four_address_bytes()
    {
        var bytes = new TcpRecordBytes().ToBytes();
        bytes.AsSpan(48 + 4, 12).Fill(0xee);
        bytes.AsSpan(64 + 4, 12).Fill(0xee);

        TcpRecordDecoder.TryDecode(bytes, out var r).Should().Be(DecodeResult.Ok);

        r.LocalAddress.ToIPAddress().Should().Be(IPAddress.Parse("10.1.2.3"));
        r.RemoteAddress.ToIPAddress().Should().Be(IPAddress.Parse("10.9.8.7"));
    }

    [Theory]
    [InlineData("", "")]
    [InlineData("nginx", "nginx")]
    [InlineData("exactly16chars!!", "exactly16chars!!")]
    public void Comm_stops_at_the_first_nul_or_the_field_end(string comm, string expected)
    {
        var bytes = new TcpRecordBytes { Comm = comm }.ToBytes();

        TcpRecordDecoder.TryDecode(bytes, out var r).Should().Be(DecodeResult.Ok);

        r.Comm.Should().Be(expected);
    }

    [Fact]
    public void Accepts_a_longer_sample_with_trailing_bytes()
    {
        // Ring-buffer samples are 8-byte aligned; a future, longer record must not break decoding.
        var bytes = new TcpRecordBytes().ToBytes().Concat(new byte[8]).ToArray();

        TcpRecordDecoder.TryDecode(bytes, out var r).Should().Be(DecodeResult.Ok);
        r.Comm.Should().Be("curl");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(135)]
    public void Short_samples_are_malformed_not_exceptions(int length)
    {
        var bytes = new TcpRecordBytes().ToBytes()[..length];

        TcpRecordDecoder.TryDecode(bytes, out var r).Should().Be(DecodeResult.TooShort);
        r.Should().Be(default(TcpRecord));
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(1u)] // the open record of before: the socket table holds what it carried
    [InlineData(3u)]
    [InlineData(0xffffffffu)]
    public void Unknown_kinds_are_rejected(uint kind)
    {
        var bytes = new TcpRecordBytes { Kind = kind }.ToBytes();

        TcpRecordDecoder.TryDecode(bytes, out _).Should().Be(DecodeResult.UnknownKind);
    }

    [Theory]
    [InlineData((ushort)0)]
    [InlineData((ushort)1)]
    [InlineData((ushort)17)]
    public void Unknown_families_are_rejected(ushort family)
    {
        var bytes = new TcpRecordBytes { Family = family }.ToBytes();

        TcpRecordDecoder.TryDecode(bytes, out _).Should().Be(DecodeResult.UnknownFamily);
    }

    [Fact]
    public void Random_garbage_never_throws()
    {
        var random = new Random(1234);
        for (int i = 0; i < 10_000; i++)
        {
            var bytes = new byte[random.Next(0, 200)];
            random.NextBytes(bytes);
            var act = () => TcpRecordDecoder.TryDecode(bytes, out _);
            act.Should().NotThrow();
        }
    }
}
