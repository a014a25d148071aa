using System.Text;
using FlowSec.Api.V1;
using FlowSec.Relay.Ingest;
using FlowSec.Relay.Pipeline;
using FlowSec.Relay.Storage;
using Google.Protobuf;

namespace FlowSec.Tests.Relay;

/// <summary>
/// Ingest decodes flows from the protobuf bytes straight into Native columns. What users must not
/// notice: every stored row is the same as when each batch was parsed into objects by
/// Google.Protobuf and encoded by the table's column writers, the same batches are refused with the
/// same error, and unknown fields from newer sensors are skipped as Google.Protobuf skips them.
/// </summary>
public sealed class EventBatchDecoderTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Decoded_rows_make_the_same_native_block_as_the_object_path_for_random_batches(bool sorted)
    {
        var decoder = new EventBatchDecoder(decodeFlows: true);
        var objectBlock = new NativeBlock(FlowTable.Table, sorted);
        var decodedBlock = new NativeBlock(FlowTable.Table, sorted);
        var batches = 0;
        var flows = 0;
        for (var seed = 0; seed < 400; seed++)
        {
            var bytes = new WireBatch(new Random(seed)).Build();
            var expected = ObjectPath(bytes, objectBlock);
            var received = decoder.Decode(bytes, liveEvents: false);
            AppendLikeTheWriter(received, decodedBlock);

            received.Batch.Node.Should().Be(expected.Node, $"seed {seed}");
            received.Batch.BatchId.Should().Be(expected.BatchId, $"seed {seed}");
            received.Batch.Status.Should().Be(expected.Status, $"seed {seed}");
            received.EventCount.Should().Be(expected.Events.Count, $"seed {seed}");
            received.OldestTimeUnixNano.Should().Be(expected.Events.Count == 0 ? ulong.MaxValue : expected.Events.Min(e => e.TimeUnixNano), $"seed {seed}");
            received.Batch.Events.Where(e => e.Type != EventType.Flow).Should().Equal(expected.Events.Where(e => e.Type != EventType.Flow), $"seed {seed}: events of other types stay objects");
            if (received.Rows is not null)
            {
                received.LiveEvents.Should().BeNull("no live view asked for objects, so flows did not become any");
            }

            batches++;
            flows += expected.Events.Count(e => e.Type == EventType.Flow);

            if (seed % 50 == 49)
            {
                decodedBlock.Rows.Should().Be(objectBlock.Rows);
                (await Encode(decodedBlock)).Should().Equal(await Encode(objectBlock), $"the block of batches up to seed {seed}");
                decodedBlock.Bytes.Should().Be(objectBlock.Bytes);
                objectBlock.Clear();
                decodedBlock.Clear();
            }
        }

        flows.Should().BeGreaterThan(batches * 5, "the batches are mostly flows");
        decoder.BatchesHandedToProtobuf.Should().Be(0, "every batch here is well-formed, so the decoder reads all of them itself");
    }

    [Fact]
    public async Task Batches_longer_than_a_run_keep_every_event_in_its_place_between_flows_that_stay_objects()
    {
        // The decoder appends flows a run of FlowRows.Capacity at a time, and the decoded flows before
        // a flow it parses into an object (another type's payload on it) before that object: in an
        // unsorted block, any row out of its place changes the bytes.
        var decoder = new EventBatchDecoder(decodeFlows: true);
        var objects = 0;
        for (var seed = 0; seed < 12; seed++)
        {
            var bytes = new WireBatch(new Random(500 + seed), eventCount: 3 * FlowRows.Capacity + seed * 37).Build();
            var objectBlock = new NativeBlock(FlowTable.Table, sortRows: false);
            var expected = ObjectPath(bytes, objectBlock);
            if (expected.Resent)
            {
                continue;
            }

            var received = decoder.Decode(bytes, liveEvents: false);
            var decodedBlock = new NativeBlock(FlowTable.Table, sortRows: false);
            AppendLikeTheWriter(received, decodedBlock);

            objects += expected.Events.Count(e => e.Type == EventType.Flow && (e.Dns ?? e.Process ?? e.File ?? (object?)e.Alert) is not null);
            decodedBlock.Rows.Should().Be(objectBlock.Rows).And.BeGreaterThan(2 * FlowRows.Capacity, $"seed {seed}");
            (await Encode(decodedBlock)).Should().Equal(await Encode(objectBlock), $"seed {seed}");
        }

        objects.Should().BeGreaterThan(12, "flows carrying another type's payload sit between the decoded runs");
        decoder.BatchesHandedToProtobuf.Should().Be(0);
    }

    [Fact]
    public void With_a_live_consumer_every_event_is_also_an_object_stamped_with_the_batch_node()
    {
        var bytes = new WireBatch(new Random(7)).Build();
        var expected = EventBatch.Parser.ParseFrom(bytes);
        foreach (var e in expected.Events)
        {
            e.Node = expected.Node;
        }

        var received = new EventBatchDecoder(decodeFlows: true).Decode(bytes, liveEvents: true);

        received.LiveEvents.Should().Equal(expected.Events);
        received.Rows!.Rows.Should().Be(expected.Events.Count(e => e.Type == EventType.Flow));
    }

    [Fact]
    public void A_batch_counts_its_decoded_rows_after_the_writer_has_handed_their_block_back_to_the_pool()
    {
        // Ingest acks with the count after the writer may have copied the rows and reused their block.
        var batch = new EventBatch { Node = "n", BatchId = 1 };
        batch.Events.AddRange(Storage.TestFlows.Flows(30));
        var received = new EventBatchDecoder(decodeFlows: true).Decode(batch.ToByteArray(), liveEvents: false);
        received.EventCount.Should().Be(30);

        NativeBlockPool.Return(received.Rows!); // as the writer does once it copied them: the block is empty now
        received.Rows!.Rows.Should().Be(0);

        received.EventCount.Should().Be(30);
    }

    [Fact]
    public void Without_native_inserts_every_event_stays_an_object()
    {
        var bytes = new WireBatch(new Random(3)).Build();
        var received = new EventBatchDecoder(decodeFlows: false).Decode(bytes, liveEvents: false);

        received.Rows.Should().BeNull();
        received.Batch.Should().Be(EventBatch.Parser.ParseFrom(bytes));
    }

    public static TheoryData<string, byte[]> Hostile => new()
    {
        { "truncated varint", [0x10, 0xff, 0xff] },
        { "varint of 11 bytes", [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01] },
        { "length past the end", [0x1a, 0x05, 0x09, 0x01] },
        { "negative length", [0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f] },
        { "wire type 6", [0x1e, 0x00] },
        { "wire type 7", [0xa7, 0x01, 0x00] },
        { "end group without a start", [0x1c] },
        { "group never ended", [0xa3, 0x01, 0x08, 0x01] },
        { "mismatched end group", [0xa3, 0x01, 0xac, 0x01] },
        { "field number 0", [0x00, 0x01] },
        { "fixed64 time cut short", [0x1a, 0x05, 0x09, 0x01, 0x02, 0x03, 0x04] },
        { "endpoint with a length past its event", [0x1a, 0x04, 0x2a, 0x09, 0x08, 0x01] },
        { "garbage nested in an endpoint", [0x1a, 0x06, 0x18, 0x01, 0x2a, 0x02, 0xff, 0xff] },
        { "garbage nested in a label", [0x1a, 0x08, 0x18, 0x01, 0x2a, 0x04, 0x52, 0x02, 0x0a, 0x09] },
        { "garbage in another type's payload on a flow", [0x1a, 0x06, 0x18, 0x01, 0x42, 0x02, 0x0a, 0x07] },
        { "garbage in a DNS event", [0x1a, 0x06, 0x18, 0x02, 0x42, 0x02, 0x0a, 0x07] },
    };

    [Theory]
    [MemberData(nameof(Hostile))]
    public void Malformed_batches_are_refused_with_the_error_google_protobuf_gives(string what, byte[] bytes)
    {
        var google = Refusal(() => EventBatch.Parser.ParseFrom(bytes));
        google.Should().NotBeNull($"{what} is malformed protobuf");

        var ours = Refusal(() => new EventBatchDecoder(decodeFlows: true).Decode(bytes, liveEvents: false));

        ours.Should().NotBeNull($"{what} must be refused");
        ours!.GetType().Should().Be(google!.GetType());
        ours.Message.Should().Be(google.Message).And.NotBeEmpty();
    }

    public static TheoryData<string, byte[]> InvalidUtf8 => new()
    {
        { "a flow's pod", [0x0a, 0x01, 0x6e, 0x1a, 0x08, 0x18, 0x01, 0x2a, 0x04, 0x42, 0x02, 0xc3, 0x28] },
        { "a flow's state", [0x0a, 0x01, 0x6e, 0x1a, 0x08, 0x18, 0x01, 0x3a, 0x04, 0x12, 0x02, 0xed, 0xa0] },
        { "a label key", [0x0a, 0x01, 0x6e, 0x1a, 0x0a, 0x18, 0x01, 0x2a, 0x06, 0x52, 0x04, 0x0a, 0x02, 0xff, 0x41] },
        { "the node", [0x0a, 0x02, 0xff, 0xfe, 0x1a, 0x02, 0x18, 0x01] },
        // A short string with more of the batch after it (here an unknown field of 20 bytes), as in real batches.
        { "a flow's pod, the batch going on", [0x0a, 0x01, 0x6e, 0x1a, 0x08, 0x18, 0x01, 0x2a, 0x04, 0x42, 0x02, 0xc3, 0x28, 0x7a, 0x14, .. new byte[20]] },
        { "a flow's pod, its last byte", [0x0a, 0x01, 0x6e, 0x1a, 0x0b, 0x18, 0x01, 0x2a, 0x07, 0x42, 0x05, 0x61, 0x62, 0x63, 0x64, 0x80, 0x7a, 0x14, .. new byte[20]] },
        { "a flow's state of 15 bytes", [0x0a, 0x01, 0x6e, 0x1a, 0x15, 0x18, 0x01, 0x3a, 0x11, 0x12, 0x0f, .. "abcdefghijklmn"u8.ToArray(), 0xc0, 0x7a, 0x14, .. new byte[20]] },
    };

    [Fact]
    public async Task Ascii_strings_followed_by_bytes_that_are_not_utf8_are_decoded_by_the_decoder_itself()
    {
        // The ASCII check of short strings reads 16 bytes from a string's start: the bytes past its end
        // (here a fixed64 time and an unknown field of 0xff bytes) must not count.
        byte[] bytes = [0x0a, 0x01, 0x6e, 0x1a, 0x11, 0x3a, 0x04, 0x12, 0x02, 0x6f, 0x6b, 0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x18, 0x01,
            0x7a, 0x10, .. Enumerable.Repeat((byte)0xff, 16)];
        var objectBlock = new NativeBlock(FlowTable.Table, sortRows: false);
        ObjectPath(bytes, objectBlock);
        var decoder = new EventBatchDecoder(decodeFlows: true);
        var decodedBlock = new NativeBlock(FlowTable.Table, sortRows: false);

        AppendLikeTheWriter(decoder.Decode(bytes, liveEvents: false), decodedBlock);

        decoder.BatchesHandedToProtobuf.Should().Be(0);
        decodedBlock.Rows.Should().Be(1);
        (await Encode(decodedBlock)).Should().Equal(await Encode(objectBlock));
    }

    [Theory]
    [MemberData(nameof(InvalidUtf8))]
    public async Task Invalid_utf8_is_stored_as_google_protobuf_reads_it(string where, byte[] bytes)
    {
        // Google.Protobuf 3.25 does not refuse it: it decodes with replacement characters. The
        // decoder's reader refuses it and lets Google.Protobuf parse the batch, so the rows match.
        var objectBlock = new NativeBlock(FlowTable.Table, sortRows: false);
        ObjectPath(bytes, objectBlock);
        var decoder = new EventBatchDecoder(decodeFlows: true);
        var decodedBlock = new NativeBlock(FlowTable.Table, sortRows: false);

        AppendLikeTheWriter(decoder.Decode(bytes, liveEvents: false), decodedBlock);

        decodedBlock.Rows.Should().Be(1, where);
        (await Encode(decodedBlock)).Should().Equal(await Encode(objectBlock), where);
        decoder.BatchesHandedToProtobuf.Should().Be(1);
    }

    [Fact]
    public async Task Every_cut_and_corruption_of_valid_batches_is_refused_or_decoded_exactly_as_google_protobuf_does()
    {
        var decoder = new EventBatchDecoder(decodeFlows: true);
        var random = new Random(42);
        int refused = 0, accepted = 0;
        for (var seed = 0; seed < 60; seed++)
        {
            var valid = new WireBatch(new Random(1000 + seed)).Build();
            var variants = new List<byte[]>();
            for (var cut = 0; cut < valid.Length; cut += 1 + valid.Length / 150)
            {
                variants.Add(valid[..cut]);
            }

            for (var i = 0; i < 40; i++)
            {
                var corrupt = (byte[])valid.Clone();
                for (var flips = random.Next(1, 4); flips > 0 && corrupt.Length > 0; flips--)
                {
                    corrupt[random.Next(corrupt.Length)] = (byte)random.Next(256);
                }

                variants.Add(corrupt);
            }

            foreach (var bytes in variants)
            {
                var objectBlock = new NativeBlock(FlowTable.Table, sortRows: false);
                var google = Refusal(() => ObjectPath(bytes, objectBlock));
                ReceivedBatch? received = null;
                var ours = Refusal(() => received = decoder.Decode(bytes, liveEvents: false));
                if (google is not null)
                {
                    ours.Should().NotBeNull($"Google.Protobuf refuses {Convert.ToHexString(bytes)} ({google.Message})");
                    ours!.Message.Should().Be(google.Message);
                    refused++;
                    continue;
                }

                ours.Should().BeNull($"Google.Protobuf accepts {Convert.ToHexString(bytes)}");
                var decodedBlock = new NativeBlock(FlowTable.Table, sortRows: false);
                AppendLikeTheWriter(received!, decodedBlock);
                (await Encode(decodedBlock)).Should().Equal(await Encode(objectBlock), Convert.ToHexString(bytes));
                accepted++;
            }
        }

        refused.Should().BeGreaterThan(100);
        accepted.Should().BeGreaterThan(100);
    }

    // What the relay stored before: Google.Protobuf's objects, the node stamped, flows through the column writers.
    private static EventBatch ObjectPath(byte[] bytes, NativeBlock block)
    {
        var batch = EventBatch.Parser.ParseFrom(bytes);
        foreach (var e in batch.Events)
        {
            e.Node = batch.Node;
            if (e.Type == EventType.Flow)
            {
                block.Append(e, batch.BatchId);
            }
        }

        return batch;
    }

    // As ClickHouseFlowWriter: the decoded rows, then the flows that stayed objects (re-sent batches).
    private static void AppendLikeTheWriter(ReceivedBatch received, NativeBlock block)
    {
        if (received.Rows is { } rows)
        {
            rows.Table.Should().BeSameAs(FlowTable.Table);
            block.AppendBlock(rows);
        }

        foreach (var e in received.Batch.Events)
        {
            e.Node = received.Batch.Node;
            if (e.Type == EventType.Flow)
            {
                block.Append(e, received.Batch.BatchId);
            }
        }
    }

    private static Exception? Refusal(Action act)
    {
        try
        {
            act();
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }

    private static async Task<byte[]> Encode(NativeBlock block)
    {
        using var stream = new MemoryStream();
        await block.WriteToAsync(stream, CancellationToken.None);
        stream.Length.Should().Be(block.EncodedLength());
        return stream.ToArray();
    }

    /// <summary>
    /// A random <c>EventBatch</c> written field by field on the wire, as any protobuf writer may:
    /// fields in any order, some repeated (scalars: the last wins; messages: they merge), map entries
    /// with missing or repeated keys, unknown fields of every wire type (including groups) at every
    /// level, strings with non-ASCII text, empty and long values, addresses of every length, and enum
    /// values no sensor sends today.
    /// </summary>
    private sealed class WireBatch(Random random, int? eventCount = null)
    {
        private static readonly string[] Strings =
        [
            "", "a", "shop", "kube-system", "web-7-abc3", "é中😀", "nul\0tab\t", "it's \"q\"",
            new string('x', 42), new string('y', 43), new string('z', 200), string.Concat(Enumerable.Repeat("ü€", 30)),
            "sep\x1e\x1fkv\x1d" + "0esc", "\x1d",
        ];

        public byte[] Build()
        {
            var fields = new List<byte[]>
            {
                Str(1, Pick(Strings.Where(s => s.Length > 0).ToArray())),
                Varint(2, Number()),
            };
            var events = eventCount ?? random.Next(0, 40);
            for (var i = 0; i < events; i++)
            {
                fields.Add(Bytes(3, Event()));
            }

            if (random.Next(3) == 0)
            {
                var status = new SensorStatus { Version = Pick(Strings), Counters = { ["events_captured"] = Number() } };
                fields.Add(Bytes(4, status.ToByteArray()));
                if (random.Next(2) == 0)
                {
                    fields.Add(Bytes(4, new SensorStatus { StartedUnixNano = Number() }.ToByteArray()));
                }
            }

            if (random.Next(20) == 0)
            {
                fields.Add(Varint(5, 1)); // re-sent: stays on the object path
            }

            if (random.Next(4) == 0)
            {
                fields.Add(Str(1, "node-" + Pick(Strings))); // the last node wins
            }

            AddUnknown(fields, 2);
            return Concat(Shuffle(fields, keepOrderOf: 3));
        }

        private byte[] Event()
        {
            if (random.Next(8) == 0)
            {
                return OtherEvent().ToByteArray();
            }

            var fields = new List<byte[]> { Fixed64(1, Time()), Varint(3, random.Next(12) == 0 ? Pick(new ulong[] { 0, 99, (1UL << 32) + 1 }) : 1) };
            Maybe(fields, () => Str(2, Pick(Strings)));
            Maybe(fields, () => Str(4, Pick(["bpf", "fallback", ""])));
            Maybe(fields, () => Fixed64(1, Time()), 0.2);
            fields.Add(Bytes(5, Endpoint()));
            Maybe(fields, () => Bytes(5, Endpoint()), 0.2); // merges into the first
            Maybe(fields, () => Bytes(6, Endpoint()), 0.9);
            Maybe(fields, () => Bytes(7, Flow()), 0.95);
            Maybe(fields, () => Bytes(7, Flow()), 0.1);
            Maybe(fields, () => Bytes(8, new DnsLookup { Query = Pick(Strings) }.ToByteArray()), 0.05); // another type's payload on a flow
            AddUnknown(fields, 2);
            return Concat(Shuffle(fields));
        }

        private byte[] Endpoint()
        {
            var fields = new List<byte[]>();
            Maybe(fields, () => Bytes(1, RandomBytes(Pick([0, 4, 4, 4, 16, 16, 3, 7, 20]))), 0.9);
            Maybe(fields, () => Varint(2, random.Next(4) == 0 ? Number() : (ulong)random.Next(65536)));
            Maybe(fields, () => Varint(3, Number()));
            Maybe(fields, () => Str(4, Pick(Strings)));
            Maybe(fields, () => Varint(5, Number()));
            Maybe(fields, () => Str(6, Pick(Strings)));
            Maybe(fields, () => Str(7, Pick(Strings)));
            Maybe(fields, () => Str(8, Pick(Strings)), 0.9);
            Maybe(fields, () => Str(9, Pick(Strings)), 0.9);
            Maybe(fields, () => Str(9, Pick(Strings)), 0.1);
            var keys = new[] { "app", "tier", "é", "", "k8s.io/name", "k\x1f=\x1e\x1d" };
            for (var i = random.Next(5); i > 0; i--)
            {
                var entry = new List<byte[]>();
                Maybe(entry, () => Str(1, Pick(keys)), 0.9);
                Maybe(entry, () => Str(2, Pick(Strings)), 0.9);
                Maybe(entry, () => Str(1, Pick(keys)), 0.1);
                AddUnknown(entry, 1);
                fields.Add(Bytes(10, Concat(Shuffle(entry))));
            }

            for (var i = random.Next(4); i > 0; i--)
            {
                fields.Add(Str(11, Pick(Strings)));
            }

            AddUnknown(fields, 2);
            return Concat(Shuffle(fields, keepOrderOf: 10, alsoKeep: 11));
        }

        private byte[] Flow()
        {
            var fields = new List<byte[]>();
            Maybe(fields, () => Varint(1, Pick(new ulong[] { 0, 1, 6, 17, 6, 6, 17, 5, 999, ulong.MaxValue })));
            Maybe(fields, () => Str(2, Pick(["established", "closed", "refused", "reset", "", "é中😀"])));
            Maybe(fields, () => Varint(3, Number()));
            Maybe(fields, () => Str(4, Pick(["egress", "ingress", ""])));
            Maybe(fields, () => Varint(5, Pick(new ulong[] { 0, 1, 2, 7, ulong.MaxValue - 2 })));
            Maybe(fields, () => Str(6, Pick(Strings)), 0.3);
            for (var field = 7; field <= 13; field++)
            {
                var f = field;
                Maybe(fields, () => Varint(f, Number()));
            }

            Maybe(fields, () => Varint(7, Number()), 0.1);
            AddUnknown(fields, 2);
            return Concat(Shuffle(fields));
        }

        private Event OtherEvent()
        {
            var e = new Event { TimeUnixNano = Time(), Node = "n", Capture = "bpf", Source = new Endpoint { Pod = Pick(Strings), Ip = ByteString.CopyFrom(RandomBytes(4)) } };
            switch (random.Next(4))
            {
                case 0:
                    e.Type = EventType.Dns;
                    e.Dns = new DnsLookup { Query = Pick(Strings), Answers = { new DnsAnswer { Name = "a", Data = "10.0.0.1" } } };
                    break;
                case 1:
                    e.Type = EventType.Exec;
                    e.Process = new ProcessInfo { Exe = Pick(Strings), Args = { "-c", Pick(Strings) } };
                    break;
                case 2:
                    e.Type = EventType.File;
                    e.File = new FileActivity { Path = Pick(Strings), Op = "open" };
                    break;
                default:
                    e.Type = EventType.Alert;
                    e.Alert = new Alert { Rule = Pick(Strings), Priority = "warning" };
                    break;
            }

            return e;
        }

        // Unknown fields (numbers no message here uses, and known numbers with another wire type), as a newer sensor may send.
        private void AddUnknown(List<byte[]> fields, int most)
        {
            for (var i = random.Next(most + 1); i > 0; i--)
            {
                fields.Add(Unknown(0));
            }
        }

        private byte[] Unknown(int depth)
        {
            var number = random.Next(4) == 0 ? random.Next(1, 14) : random.Next(14, 3000);
            // A known number keeps a wire type the field does not have: 1 (fixed64) only for numbers whose field is not fixed64 (only Event.time is).
            var wireType = Pick(number < 14 ? [5, 3] : new[] { 0, 1, 2, 3, 5 });
            return wireType switch
            {
                0 => Varint(number, Number()),
                1 => Fixed64(number, Number()),
                2 => Bytes(number, RandomBytes(random.Next(12))),
                3 => Concat([Tag(number, 3), .. Enumerable.Range(0, depth < 3 ? random.Next(3) : 0).Select(_ => Unknown(depth + 1)), Tag(number, 4)]),
                _ => Concat([Tag(number, 5), RandomBytes(4)]),
            };
        }

        private ulong Time() => TestFlowsBase + (ulong)random.NextInt64(0, 7_200_000_000_000);

        private const ulong TestFlowsBase = 1_795_831_200UL * 1_000_000_000;

        private ulong Number() => random.Next(6) switch
        {
            0 => 0,
            1 => ulong.MaxValue,
            2 => (ulong)random.Next(128),
            3 => (ulong)random.NextInt64(),
            4 => uint.MaxValue + (ulong)random.Next(3),
            _ => (ulong)random.Next(1 << 20),
        };

        private void Maybe(List<byte[]> fields, Func<byte[]> field, double probability = 0.7)
        {
            if (random.NextDouble() < probability)
            {
                fields.Add(field());
            }
        }

        private T Pick<T>(T[] items) => items[random.Next(items.Length)];

        private byte[] RandomBytes(int length)
        {
            var bytes = new byte[length];
            random.NextBytes(bytes);
            return bytes;
        }

        // Field order is free, except that repeated fields (events, labels, names) keep their relative order among themselves.
        private List<byte[]> Shuffle(List<byte[]> fields, int keepOrderOf = -1, int alsoKeep = -1)
        {
            var kept = fields.Where(f => FieldNumber(f) is var n && (n == keepOrderOf || n == alsoKeep)).ToList();
            var shuffled = fields.OrderBy(_ => random.Next()).ToList();
            var next = 0;
            for (var i = 0; i < shuffled.Count; i++)
            {
                if (FieldNumber(shuffled[i]) is var n && (n == keepOrderOf || n == alsoKeep))
                {
                    shuffled[i] = kept[next++];
                }
            }

            return shuffled;
        }

        private static int FieldNumber(byte[] field)
        {
            var tag = new CodedInputStream(field).ReadTag();
            return (int)(tag >> 3);
        }

        private static byte[] Tag(int number, int wireType) => Write(o => o.WriteTag(number, (WireFormat.WireType)wireType));

        private static byte[] Varint(int number, ulong value) => Write(o =>
        {
            o.WriteTag(number, WireFormat.WireType.Varint);
            o.WriteUInt64(value);
        });

        private static byte[] Fixed64(int number, ulong value) => Write(o =>
        {
            o.WriteTag(number, WireFormat.WireType.Fixed64);
            o.WriteFixed64(value);
        });

        private static byte[] Bytes(int number, byte[] value) => Write(o =>
        {
            o.WriteTag(number, WireFormat.WireType.LengthDelimited);
            o.WriteBytes(ByteString.CopyFrom(value));
        });

        private static byte[] Str(int number, string value) => Bytes(number, Encoding.UTF8.GetBytes(value));

        private static byte[] Concat(IEnumerable<byte[]> parts) => parts.SelectMany(p => p).ToArray();

        private static byte[] Write(Action<CodedOutputStream> write)
        {
            using var stream = new MemoryStream();
            var output = new CodedOutputStream(stream);
            write(output);
            output.Flush();
            return stream.ToArray();
        }
    }
}
