using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using Google.Protobuf;

namespace FlowSec.Tests.Sensor.Export;

/// <summary>
/// <see cref="EventEncoding"/> writes events field by field, as <see cref="EventBatchBytes"/> adds them.
/// </summary>
public class EventEncodingTests
{
    [Fact]
    public void Writes_the_bytes_protobuf_writes_for_every_kind_of_event()
    {
        var random = new Random(20261205);
        for (int round = 0; round < 200; round++)
        {
            var batch = new EventBatch
            {
                Node = Text(random),
                BatchId = Varint(random),
                Resent = random.Next(2) == 0,
                Status = random.Next(3) == 0 ? null : new SensorStatus { Version = "v", Counters = { ["queue_dropped"] = Varint(random) } },
            };
            for (int i = random.Next(0, 40); i > 0; i--)
            {
                batch.Events.Add(RandomEvent(random));
            }

            var encoded = Encoded(batch);

            encoded.CalculateSize().Should().Be(batch.CalculateSize());
            encoded.ToByteArray().Should().Equal(batch.ToByteArray(), "round {0}", round);
        }
    }

    [Fact]
    public void Knows_every_field_the_protos_define()
    {
        // EventEncoding and the batch header write these messages field by field: a field added to events.proto or
        // relay.proto must be added there too, or it would silently not reach the relay.
        Numbers(EventBatch.Descriptor).Should().Equal([1, 2, 3, 4, 5], "the sensor writes EventBatch fields 1-5");
        Numbers(Event.Descriptor).Should().Equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "the sensor writes Event fields 1-11");
        Numbers(Endpoint.Descriptor).Should().Equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "the sensor writes Endpoint fields 1-11");
        Numbers(Flow.Descriptor).Should().Equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], "the sensor writes Flow fields 1-13");
    }

    private static int[] Numbers(Google.Protobuf.Reflection.MessageDescriptor message) =>
        [.. message.Fields.InFieldNumberOrder().Select(f => f.FieldNumber)];

    [Fact]
    public void The_relay_reads_back_the_same_batch()
    {
        var batch = new EventBatch { Node = "node-ü", BatchId = 1UL << 40 };
        batch.Events.Add(RandomEvent(new Random(1)));
        batch.Events.Add(new Event());

        // What the relay parses from Google.Protobuf's own bytes (a lone surrogate arrives as U+FFFD either way).
        var expected = EventBatch.Parser.ParseFrom(batch.ToByteArray());
        EventBatch.Parser.ParseFrom(Encoded(batch).ToByteArray()).Equals(expected).Should().BeTrue();
    }

    [Fact]
    public async Task Framed_for_grpc_like_any_message()
    {
        var batch = new EventBatch { Node = "n", BatchId = 3 };
        batch.Events.Add(RandomEvent(new Random(2)));
        using var framed = new MemoryStream();

        await FlowSec.Api.Grpc.GrpcFraming.WriteAsync(framed, Encoded(batch), CancellationToken.None);

        framed.ToArray()[5..].Should().Equal(batch.ToByteArray());
    }

    /// <summary>The batch as the exporter builds it: header first here, then each event encoded as it is added.</summary>
    internal static EventBatchBytes Encoded(EventBatch batch)
    {
        var encoded = new EventBatchBytes { Node = batch.Node, BatchId = batch.BatchId, Status = batch.Status, Resent = batch.Resent };
        foreach (var e in batch.Events)
        {
            encoded.Add(e);
        }

        return encoded;
    }

    internal static Event RandomEvent(Random random)
    {
        var e = new Event
        {
            TimeUnixNano = Maybe(random, () => Varint(random)),
            Node = Text(random),
            Type = (EventType)random.Next(0, 8),
            Capture = Text(random),
        };
        if (random.Next(4) != 0)
        {
            e.Source = RandomEndpoint(random);
        }
        if (random.Next(4) != 0)
        {
            e.Destination = RandomEndpoint(random);
        }
        if (random.Next(3) != 0)
        {
            e.Flow = new Flow
            {
                Protocol = (Protocol)random.Next(0, 3),
                State = Text(random),
                DurationNs = Maybe(random, () => Varint(random)),
                Direction = Text(random),
                Verdict = (Verdict)random.Next(0, 3),
                DropReason = Text(random),
                BytesSent = Maybe(random, () => Varint(random)),
                BytesReceived = Maybe(random, () => Varint(random)),
                PacketsSent = Maybe(random, () => Varint(random)),
                PacketsReceived = Maybe(random, () => Varint(random)),
                RttUs = (uint)Maybe(random, () => Varint(random) & uint.MaxValue),
                Retransmits = (uint)Maybe(random, () => Varint(random) & uint.MaxValue),
                SocketId = Maybe(random, () => Varint(random)),
            };
        }
        switch (random.Next(6))
        {
            case 0:
                e.Dns = new DnsLookup { Query = Text(random), Answers = { new DnsAnswer { Name = "a", Data = "10.0.0.1", Ttl = 30 } }, IsResponse = true };
                break;
            case 1:
                e.Process = new ProcessInfo { Pid = 7, Exe = Text(random), Args = { "-c", Text(random) }, ExitCode = -1 };
                break;
            case 2:
                e.File = new FileActivity { Path = Text(random), Op = "open", Result = -2 };
                break;
            case 3:
                e.Alert = new Alert { Rule = Text(random), Priority = "warning" };
                break;
        }
        return e;
    }

    private static Endpoint RandomEndpoint(Random random)
    {
        var ep = new Endpoint
        {
            Ip = random.Next(3) switch { 0 => ByteString.Empty, 1 => ByteString.CopyFrom(10, 1, 2, 3), _ => ByteString.CopyFrom(new byte[16]) },
            Port = (uint)random.Next(0, 65536),
            Pid = (uint)Maybe(random, () => Varint(random) & uint.MaxValue),
            Process = Text(random),
            CgroupId = Maybe(random, () => Varint(random)),
            ContainerId = Text(random),
            Workload = Text(random),
            Pod = Text(random),
            Namespace = Text(random),
        };
        for (int i = random.Next(0, 3); i > 0; i--)
        {
            // An empty key now and then (a map entry without its key field).
            ep.Labels[i == 1 && random.Next(4) == 0 ? "" : Text(random) + i] = Text(random);
        }
        for (int i = random.Next(0, 3); i > 0; i--)
        {
            ep.Names.Add(Text(random));
        }
        return ep;
    }

    // Empty half the time (a field left out on the wire); otherwise ASCII or multi-byte UTF-8, short or past one
    // length byte (around the 42-character and 128-byte edges of ProtoSpanWriter's one-byte length), surrogate pairs
    // and lone surrogates (written as U+FFFD, as Google.Protobuf writes them).
    internal static string Text(Random random) => random.Next(12) switch
    {
        0 or 1 or 2 or 3 or 4 or 5 => "",
        6 => "nginx",
        7 => "café-ü-名前",
        8 => new string('名', random.Next(40, 46)),
        9 => random.Next(2) == 0 ? "a\ud800b" : "😀-\udfff",
        10 => new string('x', random.Next(120, 135)),
        _ => new string('x', random.Next(100, 300)),
    };

    private static ulong Varint(Random random) => random.Next(4) switch
    {
        0 => 1,
        1 => (ulong)random.Next(128, 20_000),
        2 => ulong.MaxValue,
        _ => (ulong)random.NextInt64(),
    };

    private static ulong Maybe(Random random, Func<ulong> value) => random.Next(3) == 0 ? 0 : value();
}
