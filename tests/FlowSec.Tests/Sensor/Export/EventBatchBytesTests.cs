using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using Google.Protobuf;

namespace FlowSec.Tests.Sensor.Export;

/// <summary>
/// A batch encoded event by event must reach the relay as the very bytes the generated code writes
/// for the same batch: the relay's decoder and its de-duplication must not see a difference.
/// </summary>
public class EventBatchBytesTests
{
    [Fact]
    public void Writes_the_bytes_protobuf_writes_for_the_same_batch()
    {
        var random = new Random(20261205);
        for (int round = 0; round < 100; round++)
        {
            var batch = new EventBatch();
            var bytes = new EventBatchBytes();
            // Up to ~400 events of up to a few KB: most rounds fill several 64 KiB segments.
            for (int i = random.Next(0, 400); i > 0; i--)
            {
                var e = EventEncodingTests.RandomEvent(random);
                batch.Events.Add(e);
                bytes.Add(e);
            }
            // The header is set after the events, as the exporter does when the batch leaves.
            batch.Node = bytes.Node = random.Next(2) == 0 ? "" : "node-ü";
            batch.BatchId = bytes.BatchId = random.Next(2) == 0 ? 0 : (ulong)random.NextInt64();
            batch.Resent = bytes.Resent = random.Next(2) == 0;
            batch.Status = bytes.Status = random.Next(3) == 0 ? null : new SensorStatus { Version = "v", Counters = { ["queue_dropped"] = 7 } };

            bytes.EventCount.Should().Be(batch.Events.Count);
            bytes.CalculateSize().Should().Be(batch.CalculateSize());
            bytes.ToByteArray().Should().Equal(batch.ToByteArray(), "round {0}", round);
        }
    }

    [Fact]
    public void An_event_larger_than_a_segment_is_kept_whole()
    {
        var small = new Event { Node = "n", Type = EventType.Flow };
        var large = new Event { Type = EventType.Exec, Process = new ProcessInfo { Pid = 1, Args = { new string('a', 200_000) } } };
        var batch = new EventBatch { Node = "n", BatchId = 9, Events = { small, large, small } };
        var bytes = new EventBatchBytes { Node = "n", BatchId = 9 };
        bytes.Add(small);
        bytes.Add(large);
        bytes.Add(small);

        EventBatch.Parser.ParseFrom(bytes.ToByteArray()).Should().Be(batch);
        bytes.ToByteArray().Should().Equal(batch.ToByteArray());
    }

    [Fact]
    public void An_event_is_sent_as_it_was_when_added()
    {
        var e = new Event { Type = EventType.Flow, Source = new Endpoint { Workload = "before" } };
        var bytes = new EventBatchBytes();
        bytes.Add(e);

        e.Source.Workload = "after";

        EventBatch.Parser.ParseFrom(bytes.ToByteArray()).Events.Single().Source.Workload.Should().Be("before");
    }

    [Fact]
    public async Task Framed_for_grpc_like_the_generated_message()
    {
        var e = EventEncodingTests.RandomEvent(new Random(3));
        var batch = new EventBatch { Node = "n", BatchId = 3, Events = { e } };
        var bytes = new EventBatchBytes { Node = "n", BatchId = 3 };
        bytes.Add(e);
        using var framed = new MemoryStream();

        await GrpcFraming.WriteAsync(framed, bytes, CancellationToken.None);

        framed.ToArray()[5..].Should().Equal(batch.ToByteArray());
    }

    [Fact]
    public void Released_bytes_leave_an_empty_batch()
    {
        var bytes = new EventBatchBytes { Node = "n" };
        bytes.Add(new Event { Type = EventType.Flow });

        bytes.Release();

        bytes.EventCount.Should().Be(0);
        bytes.ToByteArray().Should().Equal(new EventBatch { Node = "n" }.ToByteArray());
    }
}
