using FlowSec.Api.V1;
using FlowSec.Sensor;
using FlowSec.Sensor.Export;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Sensor.Export;

/// <summary>
/// Which batches carry the sensor's status: the relay shows a node's last one, so the first batch
/// of a stream and every heartbeat must carry it; between them, at most one per
/// <see cref="SensorOptions.StatusInterval"/> (a snapshot reads every capture's kernel counters).
/// </summary>
public sealed class RelayExporterStatusTests : IAsyncLifetime
{
    private readonly FakeRelay _relay = new();

    public Task InitializeAsync() => _relay.StartAsync();

    public async Task DisposeAsync() => await _relay.DisposeAsync();

    [Fact]
    public async Task Within_the_interval_only_the_first_batch_carries_the_status()
    {
        var queue = new SensorEventQueue();
        for (int i = 0; i < 50; i++)
        {
            queue.TryEnqueue(Flow(i));
        }
        await using var exporter = await StartAsync(queue, new SensorOptions
        {
            BatchMaxEvents = 5,
            StatusInterval = TimeSpan.FromHours(1),
            HeartbeatInterval = TimeSpan.FromHours(1),
        });

        await Eventually.HoldsAsync(() => _relay.Received.Sum(b => b.Events.Count) == 50,
            TimeSpan.FromSeconds(30), () => $"{_relay.Received.Sum(b => b.Events.Count)} of 50 events received");

        var batches = _relay.Received.Where(b => b.Events.Count > 0).ToList();
        batches.Should().HaveCountGreaterThanOrEqualTo(10, "50 events in batches of at most 5");
        _relay.Received.First().Status.Should().NotBeNull("the relay learns the node's capture paths and counters from the stream's first batch");
        _relay.Received.First().Status.Counters.Should().ContainKey("queue_enqueued");
        _relay.Received.Skip(1).Should().OnlyContain(b => b.Status == null, "no second status within the interval");
    }

    [Fact]
    public async Task Batches_carry_the_status_again_once_the_interval_has_passed()
    {
        var queue = new SensorEventQueue();
        await using var exporter = await StartAsync(queue, new SensorOptions
        {
            BatchMaxEvents = 1,
            StatusInterval = TimeSpan.FromMilliseconds(200),
            HeartbeatInterval = TimeSpan.FromHours(1),
        });

        // One event at a time until three batches with events carry a status: the interval elapses between them.
        int sent = 0;
        await Eventually.HoldsAsync(() =>
        {
            queue.TryEnqueue(Flow(sent++));
            return _relay.Received.Count(b => b.Events.Count > 0 && b.Status != null) >= 3;
        }, TimeSpan.FromSeconds(30), () => $"{_relay.Received.Count(b => b.Status != null)} of {_relay.Received.Count} batches with a status");

        var withStatus = _relay.Received.Where(b => b.Status != null).ToList();
        withStatus.Last().Status.Counters["queue_enqueued"].Should().BeGreaterThan(withStatus.First().Status.Counters["queue_enqueued"],
            "a later status counts the events enqueued since");
    }

    [Fact]
    public async Task Heartbeats_carry_the_status()
    {
        await using var exporter = await StartAsync(new SensorEventQueue(), new SensorOptions
        {
            StatusInterval = TimeSpan.FromHours(1),
            HeartbeatInterval = TimeSpan.FromMilliseconds(100),
        });

        await Eventually.HoldsAsync(() => _relay.Received.Count >= 3,
            TimeSpan.FromSeconds(30), () => $"{_relay.Received.Count} heartbeats received");

        _relay.Received.Should().OnlyContain(b => b.Events.Count == 0 && b.Status != null,
            "with nothing to send, the heartbeat is what keeps the relay's view of the node current");
    }

    private Task<IAsyncDisposable> StartAsync(SensorEventQueue queue, SensorOptions options) => _relay.StartExporterAsync(queue, options);

    private static Event Flow(int i) => FakeRelay.Flow(i);
}
