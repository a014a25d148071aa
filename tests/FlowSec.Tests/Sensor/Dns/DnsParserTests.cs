using System.Net;
using FlowSec.Sensor.Dns;

namespace FlowSec.Tests.Sensor.Dns;

public class DnsParserTests
{
    // Real messages: dig 9.18's queries and dnsmasq 2.90's answers, captured on this host
    // (dnsmasq --no-resolv --no-hosts --address=/web.flowsec.test/10.1.2.3
    //  --host-record=host.flowsec.test,10.1.2.4,fd00::4 --cname=www.flowsec.test,host.flowsec.test).
    internal static class Real
    {
        public static readonly byte[] QueryWebA = Convert.FromHexString(
            "12a1012000010000000000010377656207666c6f777365630474657374000001000100002904d000000000000c000a0008b5bd7458baddf46c");
        public static readonly byte[] ResponseWebA = Convert.FromHexString(
            "12a1858000010001000000010377656207666c6f7773656304746573740000010001c00c000100010000000000040a01020300002904d0000000000000");
        public static readonly byte[] ResponseWwwCname = Convert.FromHexString(
            "bc8e858000010002000000010377777707666c6f7773656304746573740000010001c00c0005000100000000001304686f737407666c6f77736563047465737400c02e000100010000000000040a01020400002904d0000000000000");
        public static readonly byte[] ResponseHostAaaa = Convert.FromHexString(
            "51948580000100010000000104686f737407666c6f77736563047465737400001c0001c00c001c0001000000000010fd00000000000000000000000000000400002904d0000000000000");
        // With --local=/flowsec.test/: a name in the local domain that does not exist.
        public static readonly byte[] ResponseNxdomain = Convert.FromHexString(
            "e97d81830001000000000001076e6f7468696e6707666c6f777365630474657374000001000100002904d0000000000000");
        // Without upstream servers dnsmasq refuses names it has no data for (EDE 14, "not ready").
        public static readonly byte[] ResponseRefused = Convert.FromHexString(
            "1c1681850001000000000001046e6f7065076578616d706c65000001000100002904d0000000000006000f0002000e");

        public static IEnumerable<byte[]> All =>
            [QueryWebA, ResponseWebA, ResponseWwwCname, ResponseHostAaaa, ResponseNxdomain, ResponseRefused];
    }

    [Fact]
    public void Real_query_from_dig()
    {
        var m = DnsParser.Parse(Real.QueryWebA);

        m.Malformed.Should().Be(DnsMalformation.None);
        m.Header.Id.Should().Be(0x12a1);
        m.Header.IsResponse.Should().BeFalse();
        m.Header.RecursionDesired.Should().BeTrue();
        m.HasQuestion.Should().BeTrue();
        m.QuestionName.Should().Be("web.flowsec.test");
        m.QuestionType.Should().Be(1);
        m.QuestionClass.Should().Be(1);
        m.Answers.Should().BeEmpty();
        m.Header.AdditionalCount.Should().Be(1, "dig sends an EDNS OPT record with a cookie");
    }

    [Fact]
    public void Real_A_response()
    {
        var m = DnsParser.Parse(Real.ResponseWebA);

        m.Malformed.Should().Be(DnsMalformation.None);
        m.Header.IsResponse.Should().BeTrue();
        m.Header.Authoritative.Should().BeTrue();
        DnsNames.RcodeName(m.Header.Rcode).Should().Be("NOERROR");
        m.QuestionName.Should().Be("web.flowsec.test");
        m.Answers.Should().ContainSingle().Which.Should().Be(
            new DnsResourceRecord("web.flowsec.test", 1, 1, 0, "10.1.2.3", IPAddress.Parse("10.1.2.3")));
    }

    [Fact]
    public void Real_CNAME_chain_with_compressed_target()
    {
        var m = DnsParser.Parse(Real.ResponseWwwCname);

        m.Malformed.Should().Be(DnsMalformation.None);
        m.QuestionName.Should().Be("www.flowsec.test");
        m.Answers.Select(a => (a.Name, DnsNames.TypeName(a.Type), a.Data)).Should().Equal(
            ("www.flowsec.test", "CNAME", "host.flowsec.test"),
            ("host.flowsec.test", "A", "10.1.2.4"));
    }

    [Fact]
    public void Real_AAAA_response()
    {
        var m = DnsParser.Parse(Real.ResponseHostAaaa);

        m.Malformed.Should().Be(DnsMalformation.None);
        DnsNames.TypeName(m.QuestionType).Should().Be("AAAA");
        var answer = m.Answers.Should().ContainSingle().Subject;
        answer.Type.Should().Be(28);
        answer.Data.Should().Be("fd00::4");
        answer.Address.Should().Be(IPAddress.Parse("fd00::4"));
    }

    [Fact]
    public void Real_NXDOMAIN_and_REFUSED()
    {
        var nx = DnsParser.Parse(Real.ResponseNxdomain);
        nx.Malformed.Should().Be(DnsMalformation.None);
        DnsNames.RcodeName(nx.Header.Rcode).Should().Be("NXDOMAIN");
        nx.QuestionName.Should().Be("nothing.flowsec.test");
        nx.Answers.Should().BeEmpty();

        var refused = DnsParser.Parse(Real.ResponseRefused);
        refused.Malformed.Should().Be(DnsMalformation.None);
        DnsNames.RcodeName(refused.Header.Rcode).Should().Be("REFUSED");
        refused.QuestionName.Should().Be("nope.example");
    }

    [Theory]
    [InlineData(0, "NOERROR")]
    [InlineData(1, "FORMERR")]
    [InlineData(2, "SERVFAIL")]
    [InlineData(3, "NXDOMAIN")]
    [InlineData(4, "NOTIMP")]
    [InlineData(5, "REFUSED")]
    [InlineData(9, "NOTAUTH")]
    [InlineData(15, "RCODE15")]
    public void Rcode_names(int rcode, string name) => DnsNames.RcodeName(rcode).Should().Be(name);

    [Fact]
    public void Other_types_are_named_or_numbered_with_generic_data()
    {
        var message = new DnsPacketBuilder(7, DnsPacketBuilder.ResponseFlags, 1, 4)
            .Question("example.org", 16)
            .NameRecord("example.org", 15, "mail.example.org", prefix: [0, 10])
            .Record("example.org", 16, 60, [5, (byte)'h', (byte)'e', (byte)'"', (byte)'l', 0x07, 2, (byte)'o', (byte)'k'])
            .Record("example.org", 65, 60, [0, 1, 0])
            .Record("example.org", 4242, 60, [0xde, 0xad, 0xbe, 0xef])
            .Build();

        var m = DnsParser.Parse(message);

        m.Malformed.Should().Be(DnsMalformation.None);
        m.Answers.Select(a => (DnsNames.TypeName(a.Type), a.Data)).Should().Equal(
            ("MX", "10 mail.example.org"),
            ("TXT", "\"he\\\"l\\007\" \"ok\""),
            ("HTTPS", @"\# 3 000100"),
            ("TYPE4242", @"\# 4 DEADBEEF"));
    }

    [Fact]
    public void Names_are_lower_cased_and_hostile_bytes_escaped()
    {
        byte[][] labels = [[(byte)'W', (byte)'w', (byte)'W'], [(byte)'a', (byte)'.', (byte)'b'], [0x00, (byte)'\\', 0xff, (byte)' ']];
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.QueryFlags, 1, 0).Labels(labels).U16(1).U16(1).Build();

        var m = DnsParser.Parse(message);

        m.Malformed.Should().Be(DnsMalformation.None);
        m.QuestionName.Should().Be(@"www.a\.b.\000\\\255\032", "a dot inside a label must not read as a label boundary");
    }

    [Fact]
    public void Root_name_is_a_dot()
    {
        var m = DnsParser.Parse(new DnsPacketBuilder(1, DnsPacketBuilder.QueryFlags, 1, 0).Question(".", 2).Build());

        m.Malformed.Should().Be(DnsMalformation.None);
        m.QuestionName.Should().Be(".");
        DnsNames.TypeName(m.QuestionType).Should().Be("NS");
    }

    [Fact]
    public void Answers_beyond_the_limit_are_not_kept()
    {
        var b = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 10).Question("many.test", 1);
        for (int i = 0; i < 10; i++)
        {
            b.A("many.test", $"10.0.0.{i}");
        }

        var m = DnsParser.Parse(b.Build(), maxAnswers: 3);

        m.Malformed.Should().Be(DnsMalformation.None);
        m.Answers.Should().HaveCount(3);
        m.AnswersLimited.Should().BeTrue();
    }

    // ---- hostile input: each must come back as a reason, never an exception or a hang ----

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(11)]
    public void Shorter_than_a_header(int length)
    {
        var m = DnsParser.Parse(new byte[length]);

        m.Malformed.Should().Be(DnsMalformation.HeaderTruncated);
        DnsParser.TryReadHeader(new byte[length], out _).Should().BeFalse();
    }

    [Fact]
    public void Pointer_to_itself_is_a_loop()
    {
        // The question name is a pointer at offset 12 pointing at offset 12.
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.QueryFlags, 1, 0).Pointer(12).U16(1).U16(1).Build();

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.PointerLoop);
    }

    [Fact]
    public void Pointer_back_into_the_name_being_read_is_a_loop()
    {
        // Question: "a" + pointer to 12 (its own start): reading from there reaches the same pointer again.
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.QueryFlags, 1, 0)
            .U8(1).U8((byte)'a').Pointer(12).U16(1).U16(1).Build();

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.PointerLoop);
    }

    [Fact]
    public void Pointer_chain_going_backwards_then_forwards_is_caught()
    {
        // Question "a.test" at 12. Answer owner at 28: pointer to 30, i.e. forward into its own bytes.
        var b = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 1).Question("a.test", 1);
        int at = b.Length;
        var message = b.Pointer(at + 2).Pointer(at).U16(1).U16(1).U32(0).U16(4).Bytes(1, 2, 3, 4).Build();

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.PointerForward);
    }

    [Fact]
    public void Two_names_pointing_at_each_other()
    {
        // Question at 12: "a" + pointer to 20 (the answer's owner); answer owner at 20: pointer to 12.
        // Whichever is read first, one of the two pointers goes forward.
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 1)
            .U8(1).U8((byte)'a').Pointer(20).U16(1).U16(1)
            .Pointer(12).U16(1).U16(1).U32(0).U16(4).Bytes(1, 2, 3, 4).Build();

        var m = DnsParser.Parse(message);
        m.Malformed.Should().Be(DnsMalformation.PointerForward);
        m.MalformedOffset.Should().Be(16);
    }

    [Fact]
    public void Pointer_out_of_range()
    {
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.QueryFlags, 1, 0).Pointer(0x3fff).U16(1).U16(1).Build();

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.PointerOutOfRange);
    }

    [Fact]
    public void Pointer_cut_in_half()
    {
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.QueryFlags, 1, 0).U8(0xC0).Build();

        DnsParser.Parse(message).Malformed.Should().BeOneOf(DnsMalformation.Truncated, DnsMalformation.CountExceedsPacket);
    }

    [Theory]
    [InlineData(64)]
    [InlineData(0x7f)]
    [InlineData(0x80)]
    [InlineData(0xbf)]
    public void Label_longer_than_63(byte length)
    {
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.QueryFlags, 1, 0)
            .U8(length).Bytes(Enumerable.Repeat((byte)'a', 200).ToArray()).U8(0).U16(1).U16(1).Build();

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.LabelTooLong);
    }

    [Fact]
    public void Name_of_exactly_255_octets_is_fine_and_256_is_too_long()
    {
        // 4 labels of 63 = 256 octets with length bytes, plus the root = 257: too long.
        // 3 × 63 + one of 61: 3×64 + 62 + 1 = 255.
        string ok = string.Join(".", new string('a', 63), new string('b', 63), new string('c', 63), new string('d', 61));
        string tooLong = string.Join(".", new string('a', 63), new string('b', 63), new string('c', 63), new string('d', 62));

        var good = DnsParser.Parse(DnsPacketBuilder.Query(1, ok, 1).Build());
        var bad = DnsParser.Parse(DnsPacketBuilder.Query(1, tooLong, 1).Build());

        good.Malformed.Should().Be(DnsMalformation.None);
        good.QuestionName.Should().Be(ok);
        bad.Malformed.Should().Be(DnsMalformation.NameTooLong);
    }

    [Fact]
    public void Name_too_long_through_pointers()
    {
        // Each name adds 60 octets and points at the previous one: the fifth exceeds 255 only by compression.
        var b = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 5).Question("x", 1);
        int previous = 12;
        for (int i = 0; i < 5; i++)
        {
            int at = b.Length;
            b.U8(59).Bytes(Enumerable.Repeat((byte)('a' + i), 59).ToArray()).Pointer(previous)
                .U16(1).U16(1).U32(0).U16(4).Bytes(10, 0, 0, (byte)i);
            previous = at;
        }

        var m = DnsParser.Parse(b.Build());

        m.Malformed.Should().Be(DnsMalformation.NameTooLong);
        m.Answers.Should().HaveCount(4, "the first four names fit (63, 123, 183, 243 octets)");
    }

    [Fact]
    public void Counts_that_exceed_the_packet()
    {
        var message = DnsPacketBuilder.WithU16(Real.ResponseWebA, 6, 65535);

        var m = DnsParser.Parse(message);

        m.Malformed.Should().Be(DnsMalformation.CountExceedsPacket);
        m.Answers.Should().NotBeEmpty("what was read before the problem is kept");
    }

    [Fact]
    public void Additional_count_that_exceeds_the_packet()
    {
        var message = DnsPacketBuilder.WithU16(Real.ResponseWebA, 10, 5000);

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.CountExceedsPacket);
    }

    [Fact]
    public void Question_count_that_exceeds_the_packet()
    {
        var message = DnsPacketBuilder.WithU16(Real.QueryWebA, 4, 65535);

        var m = DnsParser.Parse(message);

        m.Malformed.Should().Be(DnsMalformation.CountExceedsPacket);
        m.QuestionName.Should().Be("web.flowsec.test");
    }

    [Fact]
    public void Every_truncation_of_a_real_response_is_reported()
    {
        foreach (var packet in Real.All)
        {
            for (int length = 12; length < packet.Length; length++)
            {
                var m = DnsParser.Parse(packet.AsSpan(0, length));
                m.Malformed.Should().BeOneOf(DnsMalformation.Truncated, DnsMalformation.CountExceedsPacket);
            }
        }
    }

    [Fact]
    public void Record_data_running_past_the_end()
    {
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 1).Question("a.test", 1)
            .Name("a.test").U16(1).U16(1).U32(0).U16(400).Bytes(1, 2, 3, 4).Build();

        DnsParser.Parse(message).Malformed.Should().BeOneOf(DnsMalformation.Truncated, DnsMalformation.CountExceedsPacket);
    }

    [Theory]
    [InlineData(1, 3)]
    [InlineData(1, 5)]
    [InlineData(28, 4)]
    [InlineData(28, 17)]
    public void Address_of_the_wrong_size(ushort type, int size)
    {
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 1).Question("a.test", type)
            .Record("a.test", type, 0, new byte[size]).Build();

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.InvalidRecordData);
    }

    [Fact]
    public void Cname_whose_name_spills_out_of_its_rdata()
    {
        // RDLENGTH says 3, but the name inside is "host" + root (6 bytes).
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 1).Question("a.test", 5)
            .Name("a.test").U16(5).U16(1).U32(0).U16(3).U8(4).Bytes("host"u8.ToArray()).U8(0).Build();

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.InvalidRecordData);
    }

    [Fact]
    public void Cname_with_trailing_bytes_in_its_rdata()
    {
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 1).Question("a.test", 5)
            .Name("a.test").U16(5).U16(1).U32(0).U16(4).Pointer(12).U16(0xffff).Build();

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.InvalidRecordData);
    }

    [Fact]
    public void Txt_with_a_string_longer_than_its_rdata()
    {
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 1).Question("a.test", 16)
            .Record("a.test", 16, 0, [200, (byte)'x']).Build();

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.InvalidRecordData);
    }

    [Fact]
    public void Huge_txt_and_generic_data_are_capped()
    {
        var txt = Enumerable.Range(0, 230).SelectMany(_ => new byte[] { 255 }.Concat(Enumerable.Repeat((byte)0x01, 255))).ToArray();
        var message = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 2).Question("a.test", 16)
            .Record("a.test", 16, 0, txt)
            .Record("a.test", 999, 0, new byte[1000]).Build();

        var m = DnsParser.Parse(message);

        m.Malformed.Should().Be(DnsMalformation.None);
        m.Answers[0].Data.Length.Should().BeLessThan(600);
        m.Answers[0].Data.Should().EndWith("…");
        m.Answers[1].Data.Should().StartWith(@"\# 1000 ").And.EndWith("…");
    }

    [Fact]
    public void Reserved_label_type_inside_a_pointer_target()
    {
        // Question is fine; the answer owner points at a byte 0x40 placed inside the header's id.
        var message = new DnsPacketBuilder(0x4000, DnsPacketBuilder.ResponseFlags, 1, 1).Question("a.test", 1)
            .Pointer(0).U16(1).U16(1).U32(0).U16(4).Bytes(1, 2, 3, 4).Build();

        DnsParser.Parse(message).Malformed.Should().Be(DnsMalformation.LabelTooLong);
    }
}
