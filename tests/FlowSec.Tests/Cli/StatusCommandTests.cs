using FlowSec.Api.Status;
using FlowSec.Api.V1;
using FlowSec.Cli.Status;

namespace FlowSec.Tests.Cli;

/// <summary>The node table of `flowsec status`: one line per node with rate, lag and losses.</summary>
public sealed class StatusCommandTests
{
    [Fact]
    public void Each_node_shows_its_rate_lag_and_lost_events()
    {
        var now = (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000;
        var lossy = new SensorStatus();
        lossy.Counters.Add(new Dictionary<string, ulong>
        {
            ["tcp_ringbuf_dropped"] = 3,
            ["queue_dropped"] = 4,
            ["dns_records_malformed"] = 5,
            ["spool_dropped_events"] = 6,
            ["tcp_flows_emitted"] = 1000,
            ["queue_depth"] = 77,
        });
        var status = new StatusResponse { StorageOk = true };
        status.Nodes.Add(new NodeStatus { Node = "node-a", Connected = true, LastSeenUnixNano = now, EventsReceived = 5000, EventsPerSecond = 1234.4, LagMs = 87, Sensor = lossy });
        status.Nodes.Add(new NodeStatus { Node = "node-b", Connected = false, LastSeenUnixNano = now - 60_000_000_000UL, EventsReceived = 12 });

        var text = new StringWriter();
        StatusCommand.Print(text, status, "http://127.0.0.1:4245");
        var lines = text.ToString().Split('\n');

        lines.Should().Contain(l => l.StartsWith("NODE", StringComparison.Ordinal) && l.Contains("EVENTS/S") && l.Contains("LAG") && l.Contains("LOST"));
        var a = lines.Single(l => l.StartsWith("node-a ", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        a.Should().ContainInOrder("up", "5000", "1234", "87", "ms", "18");
        var b = lines.Single(l => l.StartsWith("node-b ", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        b.Should().ContainInOrder("down", "12", "0.0", "-", "-");
        lines.Should().Contain(l => l.Contains("queue_dropped") && l.Contains("(lost)"));
        lines.Should().Contain(l => l.Contains("queue_depth") && !l.Contains("(lost)"));
    }

    [Fact]
    public void The_relay_storage_counters_show_withdrawn_and_abandoned_batches()
    {
        var status = new StatusResponse
        {
            StorageOk = true,
            EventsStored = 900,
            DuplicateEventsSkipped = 40,
            DuplicateBatchesSkipped = 2,
            EventsWithdrawn = 60,
            BatchesWithdrawn = 3,
            EventsAbandoned = 20,
            BatchesAbandoned = 1,
        };

        var text = new StringWriter();
        StatusCommand.Print(text, status, "http://127.0.0.1:4245");

        text.ToString().Should().Contain("duplicates skipped 40 events (2 re-sent batches)")
            .And.Contain("withdrawn unacked 60 events (3 batches)")
            .And.Contain("abandoned to another relay's claim 20 events (1 batches)");
    }

    [Theory]
    [InlineData("tcp_ringbuf_dropped", true)]
    [InlineData("udp_flow_entries_lost", true)]
    [InlineData("file_records_malformed", true)]
    [InlineData("tcp_socket_table_full", true)]
    [InlineData("drops_program_runs_lost", true)]
    [InlineData("export_dropped_no_spool", true)]
    [InlineData("queue_enqueued", false)]
    [InlineData("scope_events_skipped", false)]
    [InlineData("process_table_evicted", false)]
    [InlineData("file_unnormalized_unwatched", false)]
    public void Loss_counters_are_told_apart_by_name(string name, bool loss) =>
        SensorLossCounters.IsLoss(name).Should().Be(loss);
}
