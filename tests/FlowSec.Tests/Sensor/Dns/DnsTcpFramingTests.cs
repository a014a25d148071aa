using System.Buffers.Binary;
using FlowSec.Sensor.Dns;
using FsCheck;
using FsCheck.Fluent;

namespace FlowSec.Tests.Sensor.Dns;

/// <summary>Reassembly of length-prefixed DNS messages from TCP segments, hostile input included.</summary>
public class DnsTcpFramingTests
{
    private const ulong Cookie = 7;

    private readonly DnsTcpFraming _framing = new(maxStreams: 4, maxMessageBytes: 1024);
    private readonly List<(byte[] Message, int Declared)> _seen = [];

    private static byte[] Message(ushort id, string name = "web.flowsec.test") => DnsPacketBuilder.Query(id, name, 1).Build();

    private static byte[] Framed(params byte[][] messages) => DnsTcpFraming.Frame(messages);

    private void Segment(uint offset, byte[] data, int? segmentLength = null, bool egress = true, ulong cookie = Cookie) =>
        _framing.OnSegment(cookie, egress, offset, segmentLength ?? data.Length, data, (m, declared) => _seen.Add((m.ToArray(), declared)));

    [Fact]
    public void One_message_in_one_segment()
    {
        byte[] m = Message(1);
        Segment(0, Framed(m));

        _seen.Should().ContainSingle().Which.Message.Should().Equal(m);
        _framing.Messages.Should().Be(1);
        _framing.MessagesSplit.Should().Be(0);
    }

    [Fact]
    public void A_message_split_across_segments_even_inside_its_prefix_is_reassembled()
    {
        byte[] m = Message(2);
        byte[] stream = Framed(m);
        Segment(0, stream[..1]);
        Segment(1, stream[1..5]);
        Segment(5, stream[5..]);

        _seen.Should().ContainSingle().Which.Message.Should().Equal(m);
        _framing.MessagesSplit.Should().Be(1);
    }

    [Fact]
    public void Several_messages_in_one_segment_all_come_out_in_order()
    {
        byte[][] messages = [Message(1), Message(2, "a.test"), Message(3, "b.test")];
        Segment(0, Framed(messages));

        _seen.Select(s => s.Message).Should().BeEquivalentTo(messages, o => o.WithStrictOrdering());
    }

    [Fact]
    public void Directions_and_sockets_are_separate_streams()
    {
        byte[] q = Framed(Message(1)), r = Framed(Message(2));
        Segment(0, q[..5], egress: true);
        Segment(0, r[..3], egress: false);
        Segment(0, q[..4], cookie: 99);
        Segment(5, q[5..], egress: true);
        Segment(3, r[3..], egress: false);

        _seen.Select(s => BinaryPrimitives.ReadUInt16BigEndian(s.Message)).Should().Equal(1, 2);
        _framing.Streams.Should().Be(3);
    }

    [Fact]
    public void A_continuation_whose_start_was_missed_is_skipped_and_counted_until_whole_messages_come()
    {
        byte[] first = Framed(Message(1)), second = Framed(Message(2));
        // Met at offset 10 of a stream: the middle of something.
        Segment(10, first[10..]);
        _seen.Should().BeEmpty();
        _framing.ContinuationsSkipped.Should().Be(1);

        // The next segment is exactly one whole message: in step again.
        Segment((uint)first.Length, second);
        _seen.Should().ContainSingle().Which.Message.Should().Equal(Message(2));
    }

    [Fact]
    public void A_segment_never_seen_puts_the_stream_out_of_step_instead_of_misreading()
    {
        byte[] stream = Framed(Message(1), Message(2), Message(3));
        int m1 = 2 + Message(1).Length;
        Segment(0, stream[..(m1 + 3)]);   // message 1 and the start of 2
        Segment((uint)(m1 + 10), stream[(m1 + 10)..(2 * m1)]); // a gap inside message 2

        _seen.Should().ContainSingle("message 2 lost bytes, so it is not delivered");
        _framing.ContinuationsSkipped.Should().BeGreaterThanOrEqualTo(1);

        Segment((uint)(2 * m1), stream[(2 * m1)..]); // message 3, whole
        _seen.Select(s => BinaryPrimitives.ReadUInt16BigEndian(s.Message)).Should().Equal(1, 3);
    }

    [Fact]
    public void Retransmitted_bytes_are_dropped()
    {
        byte[] stream = Framed(Message(1), Message(2));
        Segment(0, stream[..20]);
        Segment(0, stream[..20]);          // the same segment again
        Segment(10, stream[10..]);         // overlapping the first

        _seen.Select(s => BinaryPrimitives.ReadUInt16BigEndian(s.Message)).Should().Equal(1, 2);
        _framing.Retransmitted.Should().Be(1);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(11)]
    public void A_length_shorter_than_a_dns_header_is_garbage_and_the_stream_resyncs(int length)
    {
        var garbage = new byte[2 + length];
        BinaryPrimitives.WriteUInt16BigEndian(garbage, (ushort)length);
        Segment(0, [.. garbage, .. Framed(Message(1))]);

        _seen.Should().BeEmpty("nothing after an impossible length can be trusted");
        _framing.Garbage.Should().Be(1);

        Segment((uint)(garbage.Length + Framed(Message(1)).Length), Framed(Message(4)));
        _seen.Should().ContainSingle().Which.Message.Should().Equal(Message(4));
    }

    [Fact]
    public void A_huge_length_is_bounded_the_message_comes_out_truncated_with_its_declared_length()
    {
        var framing = new DnsTcpFraming(maxStreams: 2, maxMessageBytes: 64);
        var seen = new List<(int Kept, int Declared)>();
        byte[] big = new byte[65535];
        Message(9).CopyTo(big, 0);
        byte[] stream = Framed(big, Message(10));
        for (int at = 0; at < stream.Length; at += 1400)
        {
            int end = Math.Min(stream.Length, at + 1400);
            framing.OnSegment(Cookie, true, (uint)at, end - at, stream.AsSpan(at, end - at), (m, d) => seen.Add((m.Length, d)));
        }

        seen.Should().Equal((64, 65535), (Message(10).Length, Message(10).Length));
        framing.Truncated.Should().Be(1);
    }

    [Fact]
    public void Bytes_the_kernel_did_not_copy_truncate_the_message_but_keep_the_stream_in_step()
    {
        byte[] big = new byte[900];
        Message(5).CopyTo(big, 0);
        byte[] stream = Framed(big, Message(6));
        // The kernel copies 512 bytes of each segment.
        Segment(0, stream[..512], segmentLength: 902);
        Segment(902, stream[902..]);

        _seen.Should().HaveCount(2);
        _seen[0].Message.Should().Equal(big[..510]);
        _seen[0].Declared.Should().Be(900);
        _seen[1].Message.Should().Equal(Message(6));
        _framing.Truncated.Should().Be(1);
    }

    [Fact]
    public void Truncated_segment_start_and_garbage_bytes_never_throw()
    {
        var random = new Random(5);
        for (int i = 0; i < 20_000; i++)
        {
            var data = new byte[random.Next(0, 80)];
            random.NextBytes(data);
            _framing.OnSegment((ulong)random.Next(8), random.Next(2) == 0, (uint)random.Next(0, 200), data.Length + random.Next(0, 3), data, (_, _) => { });
        }
        _framing.Streams.Should().BeLessThanOrEqualTo(4, "the stream table is bounded");
        _framing.Evicted.Should().BeGreaterThan(0);
    }

    [Fact]
    public void Streams_beyond_the_bound_evict_the_least_recently_used_and_count_it()
    {
        for (ulong c = 0; c < 6; c++)
        {
            Segment(0, Framed(Message(1))[..3], cookie: c);
        }
        _framing.Streams.Should().Be(4);
        _framing.Evicted.Should().Be(2);
    }

    [Fact]
    public void Any_segmentation_of_a_valid_stream_yields_the_same_messages()
    {
        var cases =
            from count in Gen.Choose(1, 12)
            from seed in Gen.Choose(int.MinValue, int.MaxValue)
            select (count, seed);
        var prop = Prop.ForAll(cases.ToArbitrary(), c =>
        {
            var random = new Random(c.seed);
            var messages = Enumerable.Range(0, c.count)
                .Select(i => random.Next(4) == 0 ? RandomMessage(random, random.Next(12, 3000)) : Message((ushort)i, $"n{i}.flowsec.test"))
                .ToArray();
            byte[] stream = Framed(messages);
            var framing = new DnsTcpFraming(maxStreams: 4, maxMessageBytes: 4096);
            var seen = new List<byte[]>();
            // Random cuts, sometimes with a retransmission of the previous segment in between.
            int at = 0, previous = 0;
            while (at < stream.Length)
            {
                int end = Math.Min(stream.Length, at + random.Next(1, 700));
                framing.OnSegment(Cookie, false, (uint)at, end - at, stream.AsSpan(at, end - at), (m, d) =>
                {
                    m.Length.Should().Be(d);
                    seen.Add(m.ToArray());
                });
                if (random.Next(5) == 0 && at > 0)
                {
                    framing.OnSegment(Cookie, false, (uint)previous, at - previous, stream.AsSpan(previous, at - previous), (m, _) => seen.Add(m.ToArray()));
                }
                previous = at;
                at = end;
            }
            seen.Should().BeEquivalentTo(messages, o => o.WithStrictOrdering(), $"seed {c.seed}");
            framing.ContinuationsSkipped.Should().Be(0);
        });
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(500), prop);
    }

    private static byte[] RandomMessage(Random random, int length)
    {
        var m = new byte[length];
        random.NextBytes(m);
        return m;
    }
}
