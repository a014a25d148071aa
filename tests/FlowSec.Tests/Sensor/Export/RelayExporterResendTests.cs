using FlowSec.Api.V1;
using FlowSec.Sensor;
using FlowSec.Sensor.Export;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Sensor.Export;

/// <summary>
/// Batches wait as bytes until the relay acks them: one the relay never acked goes out again on
/// the next stream with the same id and events, marked resent, so the relay can drop it if it
/// stored it already.
/// </summary>
public sealed class RelayExporterResendTests : IAsyncLifetime
{
    private int _streamsEnded;
    private readonly FakeRelay _relay;

    public RelayExporterResendTests() =>
        // The first batch that has events ends the stream unacked, once.
        _relay = new FakeRelay(batch => batch.Events.Count == 0 || Interlocked.CompareExchange(ref _streamsEnded, 1, 0) != 0);

    public Task InitializeAsync() => _relay.StartAsync();

    public async Task DisposeAsync() => await _relay.DisposeAsync();

    [Fact]
    public async Task A_batch_the_relay_did_not_ack_is_sent_again_with_the_same_events_marked_resent()
    {
        var queue = new SensorEventQueue();
        for (int i = 0; i < 30; i++)
        {
            var e = FakeRelay.Flow(i);
            e.Source = new Endpoint { Process = "curl", Port = 40000 };
            queue.TryEnqueue(e);
        }
        await using var exporter = await _relay.StartExporterAsync(queue, new SensorOptions
        {
            BatchMaxEvents = 10,
            HeartbeatInterval = TimeSpan.FromHours(1),
        });

        await Eventually.HoldsAsync(
            () => _relay.Received.Where(b => b.Resent).SelectMany(b => b.Events).Select(e => e.Flow.SocketId).Distinct().Count() >= 10
                  && _relay.Received.SelectMany(b => b.Events).Select(e => e.Flow.SocketId).Distinct().Count() == 30,
            TimeSpan.FromSeconds(30), () => $"{_relay.Received.Count} batches received");

        var first = _relay.Received.First(b => b.Events.Count > 0);
        first.Resent.Should().BeFalse("it was new when first sent");
        var again = _relay.Received.Where(b => b.BatchId == first.BatchId).ToList();
        again.Should().HaveCount(2, "sent once on the stream that ended, once on the next");
        again[1].Resent.Should().BeTrue();
        again[1].Events.Should().Equal(first.Events, "the bytes kept for the resend are the batch's");
        first.Events.Should().OnlyContain(e => e.Source.Workload == "curl", "events are enriched before they are kept as bytes");
        _relay.Received.SelectMany(b => b.Events).Should().HaveCount(40, "30 events, the 10 of the unacked batch twice");
    }
}
