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
