using FlowSec.Api.V1;
using FlowSec.Sensor;
using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Export;
using FlowSec.Tests.Storage;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Tests.Sensor.Export;

/// <summary>
/// The sensor's queue enriches and encodes events on the thread that offers them, and the exporter
/// ships those bytes: what the relay receives must be what enriching the batch as a whole gave
/// (both sides of a local connection named, whichever side closed first), every event exactly once.
/// </summary>
public sealed class RelayExporterQueuedBytesTests : IAsyncLifetime, IDisposable
{
    private const string ClientContainer = "1111111111111111111111111111111111111111111111111111111111111111";
    private const string ServerContainer = "2222222222222222222222222222222222222222222222222222222222222222";
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("flowsec-cgroups-");
    private readonly FakeRelay _relay = new();

    public Task InitializeAsync() => _relay.StartAsync();

    public async Task DisposeAsync() => await _relay.DisposeAsync();

    public void Dispose() => _root.Delete(recursive: true);

    [Fact]
    public void An_event_that_can_be_named_is_queued_as_its_enriched_bytes_one_that_cannot_as_itself()
    {
        ulong client = Cgroup($"docker/{ClientContainer}");
        ulong server = Cgroup($"docker/{ServerContainer}");
        var queue = new SensorEventQueue(capacity: 16, enricher: new EndpointEnricher(new CgroupResolver(_root.FullName), []));

        // The client's side closes first: nothing local has claimed 10.0.0.1 yet.
        queue.TryEnqueue(Flow(1, Local("10.0.0.2", client, "wrk"), Remote("10.0.0.1")), 0, out bool firstKept).Should().BeTrue();
        queue.TryEnqueue(Flow(2, Remote("10.0.0.2"), Local("10.0.0.1", server, "nginx")), 0, out bool secondKept).Should().BeTrue();

        firstKept.Should().BeTrue("the queue holds that event: its capture must not build the next flow into it");
        secondKept.Should().BeFalse("only its bytes are queued: its capture may reuse it");

        queue.Reader.TryRead(out var first).Should().BeTrue();
        first.Event.Should().NotBeNull("its destination may still turn out to be a local workload's: the exporter names it at the batch's end");
        first.Event!.Destination.ContainerId.Should().BeEmpty();
        queue.Reader.TryRead(out var second).Should().BeTrue();
        second.Event.Should().BeNull("both its addresses were known: it was encoded as it was queued");
        var decoded = EventBatch.Parser.ParseFrom(second.Encoded).Events.Should().ContainSingle().Subject;
        decoded.Flow.SocketId.Should().Be(2);
        decoded.Source.ContainerId.Should().Be(ClientContainer, "the client's address was learned from the first flow");
        decoded.Destination.ContainerId.Should().Be(ServerContainer);
        decoded.Destination.Workload.Should().Be(ServerContainer[..12]);
    }

    [Fact]
    public async Task The_relay_receives_every_event_once_with_both_sides_of_each_connection_named()
    {
        ulong client = Cgroup($"docker/{ClientContainer}");
        ulong server = Cgroup($"docker/{ServerContainer}");
        var enricher = new EndpointEnricher(new CgroupResolver(_root.FullName), []);
        var queue = new SensorEventQueue(enricher: enricher);
        int id = 0;
        for (int i = 0; i < 50; i++)
        {
            // Either side may close first.
            var clientSide = Flow(++id, Local("10.0.0.2", client, "wrk"), Remote("10.0.0.1"));
            var serverSide = Flow(++id, Remote("10.0.0.2"), Local("10.0.0.1", server, "nginx"));
            queue.TryEnqueue(i % 2 == 0 ? clientSide : serverSide);
            queue.TryEnqueue(i % 2 == 0 ? serverSide : clientSide);
        }
        queue.TryEnqueue(Flow(++id, Local("10.0.0.3", 0, "curl"), Remote("93.184.216.34")));

        await using var exporter = await _relay.StartExporterAsync(queue, new SensorOptions
        {
            BatchMaxEvents = 16,
            HeartbeatInterval = TimeSpan.FromHours(1),
        }, enricher);

        await Eventually.HoldsAsync(() => _relay.Received.Sum(b => b.Events.Count) >= id, TimeSpan.FromSeconds(30),
            () => $"{_relay.Received.Sum(b => b.Events.Count)} of {id} events received");
        var received = _relay.Received.SelectMany(b => b.Events).ToList();
        received.Select(e => e.Flow.SocketId).Should().BeEquivalentTo(Enumerable.Range(1, id).Select(i => (ulong)i), "each event once");
        var connections = received.Where(e => e.Source.Process != "curl").ToList();
        connections.Should().HaveCount(100);
        connections.Should().OnlyContain(e => e.Source.ContainerId == ClientContainer && e.Destination.ContainerId == ServerContainer,
            "both sides of a local connection are named, as when the batch was enriched as a whole");
        var remote = received.Single(e => e.Source.Process == "curl");
        remote.Source.Workload.Should().Be("curl", "a host process is named by its process");
        remote.Destination.Workload.Should().BeEmpty("nothing local owns that address");
        queue.Dropped.Should().Be(0);
    }

    [Fact]
    public void A_full_queue_drops_and_counts_events_queued_as_bytes_too()
    {
        var queue = new SensorEventQueue(capacity: 2, enricher: new EndpointEnricher(new CgroupResolver(_root.FullName), []));

        for (int i = 1; i <= 3; i++)
        {
            queue.TryEnqueue(Flow(i, Local("127.0.0.1", 0, "curl"), Remote("127.0.0.1")), 0, out bool keptEvent).Should().Be(i <= 2);
            keptEvent.Should().BeFalse("queued as bytes, or dropped");
        }

        queue.Dropped.Should().Be(1);
        queue.Enqueued.Should().Be(2);
        queue.Reader.TryRead(out var kept).Should().BeTrue();
        kept.Event.Should().BeNull("loopback peers never wait: it was queued as bytes");
    }

    private ulong Cgroup(string relative)
    {
        var dir = Directory.CreateDirectory(Path.Combine(_root.FullName, relative));
        return CgroupResolver.Inode(dir.FullName);
    }

    private static Event Flow(int socket, Endpoint source, Endpoint destination) => new()
    {
        Type = EventType.Flow,
        Node = "test",
        Source = source,
        Destination = destination,
        Flow = new Flow { Protocol = Protocol.Tcp, State = "closed", SocketId = (ulong)socket },
    };

    private static Endpoint Local(string ip, ulong cgroup, string process) =>
        new() { Ip = Ip(ip), Port = 8080, Pid = 10, Process = process, CgroupId = cgroup };

    private static Endpoint Remote(string ip) => new() { Ip = Ip(ip), Port = 40000 };

    private static ByteString Ip(string text) => ByteString.CopyFrom(System.Net.IPAddress.Parse(text).GetAddressBytes());
}
