using FlowSec.Api.V1;
using FlowSec.Relay.Observer;
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

    [Fact]
    public async Task A_withdrawn_batch_frees_its_room_is_never_read_and_its_stored_task_ends_cancelled()
    {
        var pipeline = new EventPipeline([], storageCapacityBatches: 256, storageCapacityEvents: 100);
        var first = await pipeline.EnqueueAsync(Batch(1, 60), CancellationToken.None);
        var second = await pipeline.EnqueueAsync(Batch(2, 30), CancellationToken.None);
        var waiting = pipeline.PublishAsync(Batch(3, 50), CancellationToken.None).AsTask();
        waiting.IsCompleted.Should().BeFalse("60 + 30 + 50 events exceed the bound of 100");

        pipeline.Withdraw(first).Should().BeTrue("the writer has not taken it");
        await waiting.WaitAsync(Timeout); // its room is free at once, before the writer reads anything
        pipeline.Withdraw(first).Should().BeFalse("withdrawn once");
        await FluentActions.Awaiting(() => first.Stored.Task).Should().ThrowAsync<OperationCanceledException>("nothing waits forever for a withdrawn batch");

        pipeline.StorageQueue.TryRead(out var item).Should().BeTrue();
        item.Batch.BatchId.Should().Be(2UL, "the withdrawn batch is skipped");
        pipeline.Withdraw(second).Should().BeFalse("the writer took it: it is stored as usual");
        second.Stored.Task.IsCompleted.Should().BeFalse();
        pipeline.StorageQueue.TryRead(out item).Should().BeTrue();
        item.Batch.BatchId.Should().Be(3UL);
        pipeline.StorageQueue.TryRead(out _).Should().BeFalse();
        pipeline.EventsQueued.Should().Be(0);
        pipeline.BatchesWithdrawn.Should().Be(1);
        pipeline.EventsWithdrawn.Should().Be(60);
    }

    [Fact]
    public async Task When_the_writer_and_ingest_race_for_queued_batches_each_batch_goes_to_exactly_one_of_them()
    {
        const int batches = 2_000;
        for (var round = 0; round < 20; round++)
        {
            var pipeline = new EventPipeline([], storageCapacityBatches: batches, storageCapacityEvents: batches * 3);
            var tickets = new List<QueuedBatch>();
            for (var i = 1; i <= batches; i++)
            {
                tickets.Add(await pipeline.EnqueueAsync(Batch((ulong)i, 1 + (i % 3)), CancellationToken.None));
            }

            using var start = new Barrier(2);
            var read = new List<ulong>();
            var reader = Task.Run(() =>
            {
                start.SignalAndWait();
                while (pipeline.StorageQueue.TryRead(out var item))
                {
                    read.Add(item.Batch.BatchId);
                }
            });
            var withdrawn = new List<ulong>();
            var withdrawer = Task.Run(() =>
            {
                start.SignalAndWait();
                for (var i = tickets.Count - 1; i >= 0; i--) // from the tail, so the two meet in the middle
                {
                    if (pipeline.Withdraw(tickets[i]))
                    {
                        withdrawn.Add((ulong)i + 1);
                    }
                }
            });
            await Task.WhenAll(reader, withdrawer).WaitAsync(Timeout);

            read.Concat(withdrawn).Order().Should().Equal(Enumerable.Range(1, batches).Select(i => (ulong)i), "every batch is read or withdrawn, none both");
            pipeline.EventsQueued.Should().Be(0, "each batch's room is given back exactly once");
            pipeline.BatchesWithdrawn.Should().Be(withdrawn.Count);
            tickets.Where(t => t.IsWithdrawn).All(t => t.Stored.Task.IsCanceled).Should().BeTrue("nothing waits forever for a withdrawn batch");
            tickets.Where(t => !t.IsWithdrawn).Any(t => t.Stored.Task.IsCompleted).Should().BeFalse("the writer completes those after storing them");
        }
    }

    [Fact]
    public async Task Live_sinks_get_a_batch_only_while_someone_follows_and_ingest_asks_for_objects_only_then()
    {
        var feed = new ObserverFeed();
        var pipeline = new EventPipeline([feed], storageCapacityBatches: 256, storageCapacityEvents: 100);
        pipeline.HasLiveConsumers.Should().BeFalse("no follower: ingest keeps flows as columns");

        using (var follower = feed.Subscribe())
        {
            pipeline.HasLiveConsumers.Should().BeTrue();
            await pipeline.PublishAsync(Batch(1, 3), CancellationToken.None);
            follower.Channel.Reader.Count.Should().Be(3);
        }

        pipeline.HasLiveConsumers.Should().BeFalse("the follower left");
        await pipeline.PublishAsync(Batch(2, 3), CancellationToken.None);
        pipeline.EventsReceived.Should().Be(6, "storage gets every batch either way");
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
