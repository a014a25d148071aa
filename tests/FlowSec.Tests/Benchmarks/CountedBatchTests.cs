using FlowSec.Api.V1;
using FlowSec.Benchmarks;
using Google.Protobuf;

namespace FlowSec.Tests.Benchmarks;

public class CountedBatchTests
{
    [Fact]
    public void The_scan_counts_the_client_flows_a_full_parse_counts()
    {
        var batch = new EventBatch { Node = "bench", BatchId = 42, Resent = true };
        batch.Events.Add(Flow("egress", 8080, labels: true)); // counted
        batch.Events.Add(Flow("egress", 8080)); // counted
        batch.Events.Add(Flow("ingress", 8080)); // the server's side
        batch.Events.Add(Flow("egress", 443)); // another server
        batch.Events.Add(Flow("egressing", 8080)); // not the exact word
        var dns = Flow("egress", 8080);
        dns.Type = EventType.Dns; // right fields, wrong type
        batch.Events.Add(dns);
        var noDestination = Flow("egress", 8080);
        noDestination.Destination = null;
        batch.Events.Add(noDestination);
        batch.Events.Add(new Event { Type = EventType.Exec, Process = new ProcessInfo { Exe = "/bin/sh" } });
        batch.Status = new SensorStatus { Version = "1" };
        batch.Status.Counters["queue_dropped"] = 3;

        var scanned = CountedBatch.Parser.ParseFrom(batch.ToByteArray());

        var parsed = EventBatch.Parser.ParseFrom(batch.ToByteArray());
        var expected = parsed.Events.Count(e => e.Type == EventType.Flow && e.Flow.Direction == "egress" && e.Destination?.Port == 8080);
        expected.Should().Be(2);
        scanned.ClientFlows.Should().Be(expected);
        scanned.Events.Should().Be(8);
        scanned.BatchId.Should().Be(42);
        scanned.Status!.Counters.Should().Equal(new Dictionary<string, ulong> { ["queue_dropped"] = 3 });
    }

    [Fact]
    public void A_batch_without_status_has_none()
    {
        var batch = new EventBatch { BatchId = 7 };
        batch.Events.Add(Flow("egress", 8080));

        var scanned = CountedBatch.Parser.ParseFrom(batch.ToByteArray());

        scanned.Status.Should().BeNull();
        scanned.ClientFlows.Should().Be(1);
    }

    private static Event Flow(string direction, uint port, bool labels = false)
    {
        var e = new Event
        {
            TimeUnixNano = 1,
            Node = "bench",
            Type = EventType.Flow,
            Capture = "bpf",
            Source = new Endpoint { Ip = ByteString.CopyFrom(10, 0, 0, 2), Port = 40000, Process = "wrk", Workload = "wrk" },
            Destination = new Endpoint { Ip = ByteString.CopyFrom(10, 0, 0, 1), Port = port, Names = { "web" } },
            Flow = new Flow { Protocol = Protocol.Tcp, State = "closed", Direction = direction, BytesSent = 10 },
        };
        if (labels)
        {
            e.Source.Labels["app"] = "client";
        }
        return e;
    }
}
