using System.Net;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor.Dns;

/// <summary>The C# mirror of struct fs_dns_record against the BTF of the embedded object, and its decoder.</summary>
public class DnsRecordDecoderTests
{
    [Fact]
    public void Fs_dns_record_matches_the_btf_of_the_embedded_object()
    {
        string btf = KernelLayoutTests.DumpEmbeddedObjectBtf(DnsCapture.ObjectName);

        BtfLayout.AssertMatches<FsDnsRecord>(btf, "fs_dns_record", 616);
        DnsRecordDecoder.RecordSize.Should().Be(616);
    }

    [Fact]
    public void Constants_match_flowsec_h()
    {
        BtfLayout.HeaderValue("FS_RECORD_DNS").Should().Be(FsDnsRecord.RecordKind);
        BtfLayout.HeaderValue("FS_DNS_MAX_PAYLOAD", define: true).Should().Be(FsDnsRecord.MaxPayload);
        BtfLayout.HeaderValue("FS_DNS_EGRESS").Should().Be(FsDnsRecord.Egress);
        BtfLayout.HeaderValue("FS_DNS_COUNTER_RINGBUF_RESERVE_FAILED").Should().Be((long)DnsKernelCounter.RingBufferReserveFailed);
        BtfLayout.HeaderValue("FS_DNS_COUNTER_PAYLOAD_TRUNCATED").Should().Be((long)DnsKernelCounter.PayloadTruncated);
        BtfLayout.HeaderValue("FS_DNS_COUNTER_LOAD_FAILED").Should().Be((long)DnsKernelCounter.LoadFailed);
    }

    [Fact]
    public void Decodes_an_ipv4_ingress_record()
    {
        byte[] payload = DnsParserTests.Real.ResponseWebA;
        var bytes = Record(family: 2, direction: 0, "10.0.0.53", "10.0.0.7", 53, 41000, payload, payload.Length, tgid: 321, comm: "dig");

        DnsRecordDecoder.TryDecode(bytes, out var o, out var message).Should().Be(DecodeResult.Ok);

        o.Egress.Should().BeFalse();
        o.Source.Should().Be(IPAddress.Parse("10.0.0.53"));
        o.Destination.Should().Be(IPAddress.Parse("10.0.0.7"));
        o.SourcePort.Should().Be(53);
        o.DestinationPort.Should().Be(41000);
        o.Tgid.Should().Be(321);
        o.Comm.Should().Be("dig");
        o.CgroupId.Should().Be(99);
        o.TimestampNs.Should().Be(123_456_789);
        o.MessageLength.Should().Be(payload.Length);
        message.ToArray().Should().Equal(payload);
    }

    [Fact]
    public void Decodes_an_ipv6_egress_record_with_a_cut_payload()
    {
        var payload = new byte[512];
        var bytes = Record(family: 10, direction: 1, "fd00::1", "fd00::53", 5353, 53, payload, 1400, tgid: 0, comm: "");

        DnsRecordDecoder.TryDecode(bytes, out var o, out var message).Should().Be(DecodeResult.Ok);

        o.Egress.Should().BeTrue();
        o.Source.Should().Be(IPAddress.Parse("fd00::1"));
        o.Comm.Should().BeEmpty();
        o.MessageLength.Should().Be(1400);
        message.Length.Should().Be(512);
    }

    [Fact]
    public void Bad_records_are_reported_not_thrown()
    {
        var good = Record(2, 0, "10.0.0.1", "10.0.0.2", 53, 1, [1, 2], 2, 0, "");

        DnsRecordDecoder.TryDecode(good.AsSpan(0, 100), out _, out _).Should().Be(DecodeResult.TooShort);
        var kind = (byte[])good.Clone();
        kind[0] = 1;
        DnsRecordDecoder.TryDecode(kind, out _, out _).Should().Be(DecodeResult.UnknownKind);
        var family = (byte[])good.Clone();
        family[12] = 7;
        DnsRecordDecoder.TryDecode(family, out _, out _).Should().Be(DecodeResult.UnknownFamily);
        var captured = (byte[])good.Clone();
        BitConverter.TryWriteBytes(captured.AsSpan((int)Marshal.OffsetOf<FsDnsRecord>(nameof(FsDnsRecord.captured_len))), (ushort)513);
        DnsRecordDecoder.TryDecode(captured, out _, out _).Should().Be(DecodeResult.TooShort);
    }

    [Fact]
    public void A_tcp_segment_record_says_tcp_and_carries_its_socket_and_stream_offset()
    {
        byte[] segment = [0, 38, 0x4b];
        var bytes = Record(2, 1, "10.0.0.7", "10.0.0.53", 41000, 53, segment, segment.Length, tgid: 321, comm: "dig", protocol: 6, tcpOffset: 40);

        DnsRecordDecoder.TryDecode(bytes, out var o, out var message).Should().Be(DecodeResult.Ok);

        o.Transport.Should().Be("tcp");
        o.SocketCookie.Should().Be(5);
        o.TcpOffset.Should().Be(40);
        o.MessageLength.Should().Be(3, "for TCP the record's length is the segment's");
        message.ToArray().Should().Equal(segment);
        DnsRecordDecoder.TryDecode(Record(2, 1, "10.0.0.7", "10.0.0.53", 41000, 53, segment, 3, 0, ""), out var udp, out _);
        udp.Transport.Should().Be("udp");
    }

    internal static unsafe byte[] Record(ushort family, byte direction, string source, string destination, ushort sport, ushort dport,
        byte[] payload, int messageLength, uint tgid, string comm, byte protocol = 17, uint tcpOffset = 0)
    {
        var raw = new FsDnsRecord
        {
            kind = FsDnsRecord.RecordKind,
            tgid = tgid,
            pid = tgid,
            family = family,
            direction = direction,
            protocol = protocol,
            tcp_offset = tcpOffset,
            timestamp_ns = 123_456_789,
            cgroup_id = 99,
            sock_cookie = 5,
            sport = sport,
            dport = dport,
            payload_len = (ushort)messageLength,
            captured_len = (ushort)Math.Min(payload.Length, FsDnsRecord.MaxPayload),
        };
        IPAddress.Parse(source).GetAddressBytes().CopyTo(new Span<byte>(raw.saddr, 16));
        IPAddress.Parse(destination).GetAddressBytes().CopyTo(new Span<byte>(raw.daddr, 16));
        System.Text.Encoding.UTF8.GetBytes(comm).CopyTo(new Span<byte>(raw.comm, FsDnsRecord.CommLength));
        payload.AsSpan(0, raw.captured_len).CopyTo(new Span<byte>(raw.payload, FsDnsRecord.MaxPayload));
        var bytes = new byte[sizeof(FsDnsRecord)];
        MemoryMarshal.Write(bytes, in raw);
        return bytes;
    }
}
