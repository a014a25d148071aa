using FlowSec.Api.V1;
using FlowSec.Sensor.Export;

namespace FlowSec.Tests.Sensor.Export;

public class SensorEventQueueTests
{
    [Fact]
    public async Task A_waiting_exporter_wakes_when_the_batch_can_be_filled_not_before()
    {
        var queue = new SensorEventQueue(capacity: 16);
        var waiting = queue.WaitForAsync(3, CancellationToken.None);

        queue.TryEnqueue(new Event());
        queue.TryEnqueue(new Event());
        waiting.IsCompleted.Should().BeFalse("two events do not fill a batch of three");

        queue.TryEnqueue(new Event());
        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
        queue.Count.Should().Be(3);
    }

    [Fact]
    public async Task Events_already_queued_count()
    {
        var queue = new SensorEventQueue(capacity: 16);
        queue.TryEnqueue(new Event());
        queue.TryEnqueue(new Event());

        await queue.WaitForAsync(2, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task The_batch_deadline_ends_the_wait()
    {
        var queue = new SensorEventQueue(capacity: 16);
        using var deadline = new CancellationTokenSource();
        var waiting = queue.WaitForAsync(5, deadline.Token);
        queue.TryEnqueue(new Event());

        await deadline.CancelAsync();

        await FluentActions.Awaiting(() => waiting).Should().ThrowAsync<OperationCanceledException>();
        queue.Count.Should().Be(1, "the event stays queued for the batch that leaves now");
    }

    [Fact]
    public async Task A_full_queue_still_drops_and_counts()
    {
        var queue = new SensorEventQueue(capacity: 2);
        var waiting = queue.WaitForAsync(2, CancellationToken.None);

        queue.TryEnqueue(new Event()).Should().BeTrue();
        queue.TryEnqueue(new Event()).Should().BeTrue();
        queue.TryEnqueue(new Event()).Should().BeFalse();

        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
        queue.Dropped.Should().Be(1);
    }
}
