using System.Globalization;
using System.Net;
using System.Net.Sockets;
using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using FlowSec.Tests.Integration;
using Microsoft.Extensions.Options;
using Xunit.Abstractions;

namespace FlowSec.Tests.Sensor.Udp;

/// <summary>
/// Against the real kernel (tests run as root): the cgroup_skb programs attach to the cgroup v2
/// root, see UDP between two test pods with the right tuple, counters and cgroups, and leave
/// nothing attached when stopped. In the libbpf collection, so no two loads run at once.
/// </summary>
[Collection(LibbpfCollection.Name)]
public sealed class UdpFlowCaptureKernelTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Udp_between_two_pods_is_an_egress_flow_at_the_sender_and_an_ingress_flow_at_the_receiver()
    {
        await using var t = await TestTopology.CreateAsync("a", "b");
        var (client, server) = (t.Pods["a"], t.Pods["b"]);
        await using var run = await StartCaptureAsync(output);
        int port = Random.Shared.Next(20000, 30000);
        server.Start("/usr/bin/python3", "-c", EchoServer, server.Address.ToString(), port.ToString(CultureInfo.InvariantCulture));
        await KernelProbe.WaitUntilAsync(
            async () => (await TestTopology.Sh($"ip netns exec {server.Namespace} ss -Hlun 'sport = :{port}'")).Contains(':'),
            Timeout, "the UDP server to bind");

        var (code, text, _) = await client.RunAsync(Timeout, "/usr/bin/python3", "-c", Client,
            client.Address.ToString(), server.Address.ToString(), port.ToString(CultureInfo.InvariantCulture));
        code.Should().Be(0, text);
        int clientPort = int.Parse(text.Trim(), CultureInfo.InvariantCulture);
        // The programs ran synchronously with every send and receive; two drains later all is queued.
        await run.Drains.WaitForMoreAsync(2, Timeout);

        var flows = KernelProbe.TakeQueued(run.Queue).Where(e => Involves(e, port, clientPort)).ToList();
        flows.ForEach(e => output.WriteLine(e.ToString()));
        var egress = Sum(flows.Where(e => e.Flow.Direction == "egress").ToList());
        var ingress = Sum(flows.Where(e => e.Flow.Direction == "ingress").ToList());
        flows.Should().OnlyContain(e => e.Type == EventType.Flow && e.Capture == "bpf" && e.Node == "udp-test"
            && e.Flow.Protocol == Protocol.Udp && e.Flow.State == "active" && e.Flow.Verdict == Verdict.Forwarded
            && e.Source.Port == (uint)clientPort && e.Destination.Port == (uint)port
            && e.Source.Ip.ToByteArray().SequenceEqual(client.Address.GetAddressBytes())
            && e.Destination.Ip.ToByteArray().SequenceEqual(server.Address.GetAddressBytes())
            && e.Source.Pid == 0 && e.Destination.Pid == 0);

        // Sender's socket: 3 × 100 bytes out, 3 × 50 back; its cgroup on the source.
        egress.Should().Be(new Totals(300, 3, 150, 3, client.CgroupId, 0));
        // Receiver's socket: first packet came in, so the remote client is the source.
        ingress.Should().Be(new Totals(300, 3, 150, 3, 0, server.CgroupId));
        flows.Should().OnlyContain(e => e.Flow.DurationNs < (ulong)Timeout.Ticks * 100);
    }

    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("::1")]
    public async Task Loopback_udp_of_this_process_is_seen_on_both_sockets(string address)
    {
        await using var run = await StartCaptureAsync(output);
        var ip = IPAddress.Parse(address);
        using var server = new Socket(ip.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        server.Bind(new IPEndPoint(ip, 0));
        using var client = new Socket(ip.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        client.Bind(new IPEndPoint(ip, 0));
        int serverPort = ((IPEndPoint)server.LocalEndPoint!).Port;
        int clientPort = ((IPEndPoint)client.LocalEndPoint!).Port;

        client.SendTo(new byte[1200], server.LocalEndPoint!);
        client.SendTo(new byte[10], server.LocalEndPoint!);
        var buffer = new byte[2048];
        EndPoint from = new IPEndPoint(ip, 0);
        server.ReceiveFrom(buffer, ref from).Should().Be(1200);
        server.ReceiveFrom(buffer, ref from).Should().Be(10);
        await run.Drains.WaitForMoreAsync(2, Timeout);

        var flows = KernelProbe.TakeQueued(run.Queue).Where(e => Involves(e, serverPort, clientPort)).ToList();
        flows.ForEach(e => output.WriteLine(e.ToString()));
        ulong own = OwnCgroupId();
        Sum(flows.Where(e => e.Flow.Direction == "egress").ToList()).Should().Be(new Totals(1210, 2, 0, 0, own, 0));
        Sum(flows.Where(e => e.Flow.Direction == "ingress").ToList()).Should().Be(new Totals(1210, 2, 0, 0, 0, own));
        flows.Should().OnlyContain(e => e.Source.Ip.ToByteArray().SequenceEqual(ip.GetAddressBytes()));
    }

    [Fact]
    public async Task Flows_evicted_from_a_full_kernel_table_are_counted_as_lost()
    {
        const int sockets = 600;
        await using var run = await StartCaptureAsync(output, maxFlows: 64);
        using var server = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        server.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        // Each client socket is a new flow on both sides: far more than 64 entries between two drains.
        // They stay open until the end, so no two share an ephemeral port (and a flow key).
        var clients = new List<Socket>();
        try
        {
            for (int i = 0; i < sockets; i++)
            {
                var client = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                clients.Add(client);
                client.SendTo(new byte[8], server.LocalEndPoint!);
            }
            await run.Drains.WaitForMoreAsync(2, Timeout);
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }

        var counters = new Dictionary<string, ulong>();
        run.Capture.AddCounters(counters);
        output.WriteLine(string.Join(", ", counters.Select(c => $"{c.Key}={c.Value}")));
        counters["udp_flow_entries_inserted"].Should().BeGreaterThanOrEqualTo(2 * sockets);
        counters["udp_flow_entries_lost"].Should().BeGreaterThan(0, "the LRU evicted entries no drain saw");
        counters["udp_flow_entries_drained"].Should().BeGreaterThan(0).And.BeLessThan(counters["udp_flow_entries_inserted"]);
        counters["udp_drain_errors"].Should().Be(0);
    }

    [Fact]
    public async Task Stopping_detaches_everything_from_the_cgroup_and_unloads_the_programs()
    {
        IReadOnlyList<uint> ours;
        string cgroup;
        var status = new List<CapturePath>();
        var counters = new Dictionary<string, ulong>();
        await using (var run = await StartCaptureAsync(output))
        {
            ours = run.Capture.ProgramIds;
            cgroup = run.Capture.CgroupPath;
            status.AddRange(run.Capture.CapturePaths());
            ours.Should().HaveCount(2).And.NotContain(0u);
            KernelProbe.LoadedProgramIds().Should().Contain(ours);
            KernelProbe.LinkedProgramIds().Should().Contain(ours);
            KernelProbe.CgroupProgramIds(cgroup).Should().Contain(ours, "bpftool cgroup show must list both programs on the root");
            run.Capture.AddCounters(counters);
        }

        cgroup.Should().Be(TestTopology.CgroupRoot);
        status.Select(s => (s.Signal, s.Program, s.Path, s.State, s.Reason)).Should().BeEquivalentTo(new[]
        {
            ("udp", "udp_egress", $"cgroup_skb/egress:{cgroup}", "active", ""),
            ("udp", "udp_ingress", $"cgroup_skb/ingress:{cgroup}", "active", ""),
        });
        counters.Keys.Should().Contain(["udp_flow_entries_inserted", "udp_flow_entries_drained", "udp_flow_entries_lost", "udp_flows_evicted"]);
        KernelProbe.LoadedProgramIds().Should().NotIntersectWith(ours);
        KernelProbe.LinkedProgramIds().Should().NotIntersectWith(ours);
        KernelProbe.CgroupProgramIds(cgroup).Should().NotIntersectWith(ours);
    }

    [Fact]
    public async Task A_cgroup_that_does_not_exist_makes_the_path_unavailable_without_throwing()
    {
        var queue = new SensorEventQueue();
        using var capture = new UdpFlowCapture(queue,
            Options.Create(new UdpFlowOptions { CgroupPath = "/sys/fs/cgroup/unified/flowsec-no-such-cgroup" }),
            Options.Create(new CaptureOptions { Node = "udp-test" }), new TestOutputLogger<UdpFlowCapture>(output));
        await capture.StartAsync(CancellationToken.None);
        await capture.ExecuteTask!.WaitAsync(Timeout);

        var path = capture.CapturePaths().Should().ContainSingle().Subject;
        path.State.Should().Be("unavailable");
        path.Reason.Should().Contain("flowsec-no-such-cgroup");
        await capture.StopAsync(CancellationToken.None);
    }

    internal const string EchoServer = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sys.argv[1], int(sys.argv[2])))
        while True:
            data, peer = s.recvfrom(4096)
            s.sendto(b"y" * 50, peer)
        """;

    private const string Client = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.bind((sys.argv[1], 0))
        for _ in range(3):
            s.sendto(b"x" * 100, (sys.argv[2], int(sys.argv[3])))
            s.recvfrom(4096)
        print(s.getsockname()[1])
        """;

    private sealed record Totals(ulong BytesSent, ulong PacketsSent, ulong BytesReceived, ulong PacketsReceived, ulong SourceCgroup, ulong DestinationCgroup);

    // A flow may straddle drains: its events carry deltas, so the flow is their sum.
    private static Totals Sum(List<Event> flows) => new(
        (ulong)flows.Sum(e => (long)e.Flow.BytesSent), (ulong)flows.Sum(e => (long)e.Flow.PacketsSent),
        (ulong)flows.Sum(e => (long)e.Flow.BytesReceived), (ulong)flows.Sum(e => (long)e.Flow.PacketsReceived),
        flows.Select(e => e.Source.CgroupId).Distinct().SingleOrDefault(),
        flows.Select(e => e.Destination.CgroupId).Distinct().SingleOrDefault());

    private static bool Involves(Event e, int serverPort, int clientPort) =>
        e.Flow?.Protocol == Protocol.Udp && e.Source.Port == clientPort && e.Destination.Port == serverPort;

    // cgroup v2 id = inode of the process's cgroup directory in the unified hierarchy.
    private static ulong OwnCgroupId()
    {
        string path = File.ReadAllLines("/proc/self/cgroup").Single(l => l.StartsWith("0::", StringComparison.Ordinal))[3..];
        return ulong.Parse(KernelLayoutTests.Run("stat", $"-c %i {TestTopology.CgroupRoot}{path}").Trim(), CultureInfo.InvariantCulture);
    }

    /// <summary>A started <see cref="UdpFlowCapture"/> with its queue; disposing stops it.</summary>
    private static Task<MapDrainCaptureRun<UdpFlowCapture>> StartCaptureAsync(ITestOutputHelper output, uint maxFlows = 65536)
    {
        var queue = new SensorEventQueue();
        var capture = new UdpFlowCapture(queue,
            Options.Create(new UdpFlowOptions { DrainInterval = TimeSpan.FromMilliseconds(100), MaxFlows = maxFlows }),
            Options.Create(new CaptureOptions { Node = "udp-test" }), new TestOutputLogger<UdpFlowCapture>(output));
        return MapDrainCaptureRun<UdpFlowCapture>.StartAsync(capture, queue, Timeout, "the UDP capture");
    }
}
