using FlowSec.Api.V1;
using FlowSec.Relay.Ingest;

namespace FlowSec.Tests.Relay;

/// <summary>What `flowsec status` shows per node: rate over the window, capture → relay lag.</summary>
public sealed class NodeRegistryTests
{
    private static readonly DateTimeOffset T0 = new(2026, 12, 4, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Rate_is_events_in_the_window_per_second_and_lag_is_the_oldest_event_age()
    {
        var nodes = new NodeRegistry();
        nodes.Connected("node-a");
        nodes.Received(Batch("node-a", 500, capturedAt: T0.AddMilliseconds(-250)), T0);
        nodes.Received(Batch("node-a", 1500, capturedAt: T0.AddSeconds(5).AddMilliseconds(-40)), T0.AddSeconds(5));

        var status = nodes.Snapshot(T0.AddSeconds(6)).Single();
        status.EventsReceived.Should().Be(2000);
        status.EventsPerSecond.Should().Be(200, "2000 events in a 10 s window");
        status.LagMs.Should().Be(40);
        status.Connected.Should().BeTrue();
    }

    [Fact]
    public void A_node_gone_quiet_drops_to_zero_rate_but_keeps_its_total()
    {
        var nodes = new NodeRegistry();
        nodes.Received(Batch("node-b", 100, T0), T0);

        var status = nodes.Snapshot(T0 + NodeRegistry.RateWindow + TimeSpan.FromSeconds(1)).Single();
        status.EventsPerSecond.Should().Be(0);
        status.LagMs.Should().Be(0);
        status.EventsReceived.Should().Be(100);
    }

    [Fact]
    public void Heartbeats_do_not_change_the_rate_and_a_clock_ahead_gives_no_lag()
    {
        var nodes = new NodeRegistry();
        nodes.Received(Batch("node-c", 10, capturedAt: T0.AddSeconds(2)), T0);
        nodes.Received(new EventBatch { Node = "node-c" }, T0.AddSeconds(1));

        var status = nodes.Snapshot(T0.AddSeconds(1)).Single();
        status.EventsPerSecond.Should().Be(1);
        status.LagMs.Should().Be(0);
    }

    [Fact]
    public void Nodes_are_listed_by_name()
    {
        var nodes = new NodeRegistry();
        foreach (var name in new[] { "node-c", "node-a", "node-b" })
        {
            nodes.Received(Batch(name, 1, T0), T0);
        }
        nodes.Snapshot(T0).Select(n => n.Node).Should().Equal("node-a", "node-b", "node-c");
    }

    private static EventBatch Batch(string node, int events, DateTimeOffset capturedAt)
    {
        var batch = new EventBatch { Node = node };
        for (var i = 0; i < events; i++)
        {
            batch.Events.Add(new Event { Node = node, TimeUnixNano = (ulong)capturedAt.ToUnixTimeMilliseconds() * 1_000_000 + (ulong)i });
        }
        return batch;
    }
}
