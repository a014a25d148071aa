using FlowSec.Api.V1;
using FlowSec.Sensor.Attribution;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Tests.Sensor.Attribution;

public sealed class EndpointEnricherTests : IDisposable
{
    private const string ClientContainer = "1111111111111111111111111111111111111111111111111111111111111111";
    private const string ServerContainer = "2222222222222222222222222222222222222222222222222222222222222222";
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("flowsec-cgroups-");

    public void Dispose() => _root.Delete(recursive: true);

    [Fact]
    public void Flows_alternating_between_workloads_each_get_their_own()
    {
        // A fake cgroup tree: the resolver maps directory inodes (cgroup ids) to paths.
        ulong client = Cgroup($"docker/{ClientContainer}");
        ulong server = Cgroup($"docker/{ServerContainer}");
        var enricher = new EndpointEnricher(new CgroupResolver(_root.FullName), []);
        var events = new List<Event>();
        for (int i = 0; i < 6; i++)
        {
            // Each connection seen from both sides: the client's egress flow and the server's ingress flow.
            events.Add(Flow(Local("10.0.0.2", client, "wrk"), Remote("10.0.0.1")));
            events.Add(Flow(Remote("10.0.0.2"), Local("10.0.0.1", server, "nginx")));
        }
        events.Add(Flow(Local("10.0.0.3", 0, "curl"), Remote("10.0.0.1")));

        enricher.Enrich(events);

        for (int i = 0; i < 12; i += 2)
        {
            events[i].Source.ContainerId.Should().Be(ClientContainer);
            events[i].Destination.ContainerId.Should().Be(ServerContainer, "the server's address was learned from its own flow in the batch");
            events[i + 1].Source.ContainerId.Should().Be(ClientContainer, "the client's address was learned from its own flow in the batch");
            events[i + 1].Destination.ContainerId.Should().Be(ServerContainer);
        }
        events[0].Source.Workload.Should().Be(ClientContainer[..12]);
        events[12].Source.Workload.Should().Be("curl", "a host process is named by its process");
        events[12].Destination.Workload.Should().Be(ServerContainer[..12]);
    }

    [Fact]
    public void Taken_run_by_run_the_two_sides_of_a_connection_still_know_each_other()
    {
        // The exporter enriches events as it takes them from the queue, a run at a time: the
        // client's flow may come in one run and the server's (which tells whose address it is) in the next.
        ulong client = Cgroup($"docker/{ClientContainer}");
        ulong server = Cgroup($"docker/{ServerContainer}");
        var enricher = new EndpointEnricher(new CgroupResolver(_root.FullName), []);
        var clientSide = Flow(Local("10.0.0.2", client, "wrk"), Remote("10.0.0.1"));
        var serverSide = Flow(Remote("10.0.0.2"), Local("10.0.0.1", server, "nginx"));

        enricher.Learn(clientSide);
        enricher.TryName(clientSide).Should().BeFalse("10.0.0.1 may still turn out to be a local workload's");
        enricher.Learn(serverSide);
        enricher.TryName(serverSide).Should().BeTrue("both its addresses are known by now");
        enricher.NameAtBatchEnd(clientSide);

        clientSide.Destination.ContainerId.Should().Be(ServerContainer);
        serverSide.Source.ContainerId.Should().Be(ClientContainer);
        var next = Flow(Local("10.0.0.2", client, "wrk"), Remote("10.0.0.1"));
        enricher.Learn(next);
        enricher.TryName(next).Should().BeTrue("the server's address is known from the last batch");
        next.Destination.ContainerId.Should().Be(ServerContainer);
    }

    [Fact]
    public void An_address_no_local_workload_claimed_in_a_batch_holds_nothing_back_afterwards()
    {
        ulong client = Cgroup($"docker/{ClientContainer}");
        ulong server = Cgroup($"docker/{ServerContainer}");
        var enricher = new EndpointEnricher(new CgroupResolver(_root.FullName), []);
        var first = Flow(Local("10.0.0.2", client, "wrk"), Remote("93.184.216.34"));
        enricher.Learn(first);
        enricher.TryName(first).Should().BeFalse();
        enricher.NameAtBatchEnd(first);
        first.Destination.Workload.Should().BeEmpty("nothing local owns that address");

        var later = Flow(Local("10.0.0.2", client, "wrk"), Remote("93.184.216.34"));
        enricher.Learn(later);
        enricher.TryName(later).Should().BeTrue("a remote peer's events are encoded as they come, not held for their batch");

        // A workload that later takes the address is named again.
        var claimed = Flow(Remote("10.0.0.2"), Local("93.184.216.34", server, "nginx"));
        var toIt = Flow(Local("10.0.0.2", client, "wrk"), Remote("93.184.216.34"));
        enricher.Learn(claimed);
        enricher.Learn(toIt);
        enricher.TryName(claimed).Should().BeTrue();
        enricher.TryName(toIt).Should().BeTrue();
        toIt.Destination.ContainerId.Should().Be(ServerContainer);
    }

    [Fact]
    public void Names_come_from_the_name_cache_only_when_it_knows_some()
    {
        var names = new FakeNames { ["10.0.0.1"] = ["web.shop.local"] };
        var enricher = new EndpointEnricher(new CgroupResolver(_root.FullName), [], names);
        var named = Flow(Remote("10.0.0.9"), Remote("10.0.0.1"));

        enricher.Enrich([named]);

        named.Destination.Names.Should().Equal("web.shop.local");
        named.Source.Names.Should().BeEmpty();
    }

    private ulong Cgroup(string relative)
    {
        var dir = Directory.CreateDirectory(Path.Combine(_root.FullName, relative));
        return CgroupResolver.Inode(dir.FullName);
    }

    private static Event Flow(Endpoint source, Endpoint destination) =>
        new() { Type = EventType.Flow, Source = source, Destination = destination, Flow = new Flow { Protocol = Protocol.Tcp } };

    private static Endpoint Local(string ip, ulong cgroup, string process) =>
        new() { Ip = Ip(ip), Port = 8080, Pid = 10, Process = process, CgroupId = cgroup };

    private static Endpoint Remote(string ip) => new() { Ip = Ip(ip), Port = 40000 };

    private static ByteString Ip(string text) => ByteString.CopyFrom(System.Net.IPAddress.Parse(text).GetAddressBytes());

    private sealed class FakeNames : Dictionary<string, string[]>, IEndpointNames
    {
        public IReadOnlyList<string> NamesFor(ReadOnlySpan<byte> address) =>
            TryGetValue(new System.Net.IPAddress(address).ToString(), out var names) ? names : [];
    }
}
