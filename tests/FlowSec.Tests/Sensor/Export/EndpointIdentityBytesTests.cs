using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Tests.Sensor.Export;

/// <summary>
/// <see cref="EventEncoding"/> copies an endpoint's identity fields from <see cref="EndpointIdentityBytes"/> when it
/// has encoded that identity before: what reaches the relay must stay exactly what Google.Protobuf writes, however
/// the identity changes between two events.
/// </summary>
public class EndpointIdentityBytesTests
{
    [Fact]
    public void Flows_of_shared_identities_encode_as_protobuf_writes_them()
    {
        var random = new Random(8);
        // Identities as the enricher and the comm cache hand them out: the same string objects again and again.
        var identities = Enumerable.Range(0, 24).Select(_ => RandomIdentity(random)).ToArray();
        // Reused events, as FlowAssembler builds each flow into the event the queue handed back.
        var reused = new Event { Source = new Endpoint(), Destination = new Endpoint(), Flow = new Flow() };
        var encoder = EventEncoding.ForThisThread;
        long hitsBefore = encoder.Identities.Hits;

        for (int i = 0; i < 3_000; i++)
        {
            var e = random.Next(10) == 0 ? EventEncodingTests.RandomEvent(random) : reused;
            if (ReferenceEquals(e, reused))
            {
                e.TimeUnixNano = (ulong)random.NextInt64();
                Assign(e.Source, identities[random.Next(identities.Length)], random);
                Assign(e.Destination, identities[random.Next(identities.Length)], random);
                e.Flow.BytesSent = (ulong)random.Next();
                e.Flow.State = EventEncodingTests.Text(random);
            }

            EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e), "event {0}", i);
        }

        (encoder.Identities.Hits - hitsBefore).Should().BeGreaterThan(1_000, "shared identities are copied, not encoded again");
    }

    [Fact]
    public void A_process_that_execs_or_a_pod_whose_labels_change_is_encoded_anew()
    {
        var labels = new Dictionary<string, string> { ["app"] = "web", ["tier"] = "front" };
        var ep = new Endpoint { Ip = ByteString.CopyFrom(10, 0, 0, 1), Port = 80, Pid = 42, Process = "httpd", CgroupId = 7, Workload = "web", Pod = "web-1", Namespace = "prod" };
        ep.Labels.Add(labels);
        var e = new Event { Type = EventType.Flow, Source = ep };
        EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e));

        // exec: same pid and cgroup, another process name of the same length (the same slot of the table).
        ep.Process = "nginx";
        EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e), "the name after exec");

        // The pod's labels: a value changes, one is added, one is removed, the order changes.
        ep.Labels["tier"] = "back";
        EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e), "a changed label value");
        ep.Labels["team"] = "ops";
        EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e), "an added label");
        ep.Labels.Remove("app");
        EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e), "a removed label");
        ep.Labels.Clear();
        ep.Labels.Add("team", "ops");
        ep.Labels.Add("tier", "back");
        EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e), "labels in another order");

        // Another pod in the same workload, the cgroup moved, the process gone.
        ep.Pod = "web-2";
        EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e), "another pod");
        ep.CgroupId = 8;
        EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e), "another cgroup");
        ep.Pid = 0;
        ep.Process = "";
        EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e), "no process");
        // An equal string that is another object: a miss, same bytes.
        ep.Workload = new string("web".AsSpan());
        EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e), "an equal workload");
    }

    [Fact]
    public void Two_identities_that_share_a_slot_keep_their_own_bytes()
    {
        // Same pid, cgroup and name lengths: the same slot of the direct-mapped table, as source and destination.
        var source = new Endpoint { Pid = 9, CgroupId = 3, Process = "aaaa", Workload = "pod-a", Pod = "p1" };
        var destination = new Endpoint { Pid = 9, CgroupId = 3, Process = "bbbb", Workload = "pod-b", Pod = "p2" };
        var e = new Event { Type = EventType.Flow, Source = source, Destination = destination };

        for (int i = 0; i < 3; i++)
        {
            EventBatchBytes.Encode(e).Should().Equal(AsInBatch(e));
            EventBatch.Parser.ParseFrom(EventBatchBytes.Encode(e)).Events.Single().Should().Be(e);
        }
    }

    // The event as the batch holds it: field 3 of EventBatch (tag, length, event).
    private static byte[] AsInBatch(Event e) => new EventBatch { Events = { e.Clone() } }.ToByteArray();

    private sealed record Identity(uint Pid, string Process, ulong CgroupId, string ContainerId, string Workload, string Pod, string Namespace, (string Key, string Value)[] Labels);

    private static Identity RandomIdentity(Random random)
    {
        string Text() => EventEncodingTests.Text(random);
        var labels = Enumerable.Range(0, random.Next(0, 4)).Select(i => (Text() + i, Text())).ToArray();
        return new Identity(
            random.Next(3) == 0 ? 0 : (uint)random.Next(1, 5), // few pids: different identities share slots
            Text(), random.Next(3) == 0 ? 0 : (ulong)random.NextInt64(), Text(), Text(), Text(), Text(), labels);
    }

    private static void Assign(Endpoint ep, Identity identity, Random random)
    {
        ep.Ip = random.Next(2) == 0 ? ByteString.CopyFrom(10, 0, 0, (byte)random.Next(256)) : ByteString.Empty;
        ep.Port = (uint)random.Next(0, 65536);
        ep.Pid = identity.Pid;
        ep.Process = identity.Process;
        ep.CgroupId = identity.CgroupId;
        ep.ContainerId = identity.ContainerId;
        ep.Workload = identity.Workload;
        ep.Pod = identity.Pod;
        ep.Namespace = identity.Namespace;
        ep.Labels.Clear();
        foreach (var (key, value) in identity.Labels)
        {
            ep.Labels[key] = value;
        }
        ep.Names.Clear();
        if (random.Next(4) == 0)
        {
            ep.Names.Add(EventEncodingTests.Text(random));
        }
    }
}
