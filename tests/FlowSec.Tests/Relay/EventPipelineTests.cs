using FlowSec.Api.V1;
using FlowSec.Relay.Pipeline;

namespace FlowSec.Tests.Relay;

/// <summary>The storage queue's bound in events: what keeps the relay's memory flat when sensors send faster than ClickHouse stores.</summary>
public sealed class EventPipelineTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Publishing_waits_once_the_queued_events_reach_the_bound_and_reading_a_batch_frees_its_room()
    {
        var pipeline = new EventPipeline([], storageCapacityBatches: 256, storageCapacityEvents: 100);
        await pipeline.PublishAsync(Batch(1, 60), CancellationToken.None);

        var second = pipeline.PublishAsync(Batch(2, 60), CancellationToken.None).AsTask();
        second.IsCompleted.Should().BeFalse("60 + 60 events exceed the bound of 100");
        pipeline.EventsQueued.Should().Be(60);

        pipeline.StorageQueue.TryRead(out var item).Should().BeTrue();
        item.Batch.BatchId.Should().Be(1UL);
        await second.WaitAsync(Timeout);
        pipeline.EventsQueued.Should().Be(60);
        pipeline.EventsReceived.Should().Be(120);
    }

    [Fact]
    public async Task A_batch_larger_than_the_bound_goes_through_alone()
    {
        var pipeline = new EventPipeline([], storageCapacityBatches: 256, storageCapacityEvents: 100);
        await pipeline.PublishAsync(Batch(1, 250), CancellationToken.None).AsTask().WaitAsync(Timeout);

        var next = pipeline.PublishAsync(Batch(2, 1), CancellationToken.None).AsTask();
        next.IsCompleted.Should().BeFalse("the queue is over its bound until the large batch is read");
        pipeline.StorageQueue.TryRead(out _).Should().BeTrue();
        await next.WaitAsync(Timeout);
        pipeline.EventsQueued.Should().Be(1);
    }

    [Fact]
    public async Task A_publish_cancelled_while_waiting_takes_no_room()
    {
        var pipeline = new EventPipeline([], storageCapacityBatches: 256, storageCapacityEvents: 100);
        await pipeline.PublishAsync(Batch(1, 80), CancellationToken.None);
        using var cts = new CancellationTokenSource();
        var waiting = pipeline.PublishAsync(Batch(2, 50), cts.Token).AsTask();
        await cts.CancelAsync();

        await FluentActions.Awaiting(() => waiting).Should().ThrowAsync<OperationCanceledException>();
        pipeline.EventsQueued.Should().Be(80);
        pipeline.StorageQueue.TryRead(out _).Should().BeTrue();
        pipeline.StorageQueue.TryRead(out _).Should().BeFalse("the cancelled batch was never queued");
        pipeline.EventsQueued.Should().Be(0);
    }

    private static EventBatch Batch(ulong id, int events)
    {
        var batch = new EventBatch { Node = "n", BatchId = id };
        for (var i = 0; i < events; i++)
        {
            batch.Events.Add(new Event { Type = EventType.Flow, TimeUnixNano = (ulong)i });
        }

        return batch;
    }
}
