using System.Globalization;
using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using FlowSec.Tests.Integration;
using Microsoft.Extensions.Options;
using Xunit.Abstractions;

namespace FlowSec.Tests.Sensor.Drops;

/// <summary>
/// Against the real kernel (root): a firewall drop in a test pod becomes a DROPPED flow with the
/// kernel's reason and the packet's 5-tuple, and the tracepoint program leaves nothing behind.
/// </summary>
[Collection(LibbpfCollection.Name)]
public sealed class DropCaptureKernelTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task A_syn_dropped_by_the_servers_firewall_is_a_dropped_flow_with_reason_netfilter_drop()
    {
        await using var t = await TestTopology.CreateAsync("a", "b");
        var (client, server) = (t.Pods["a"], t.Pods["b"]);
        int port = Random.Shared.Next(30000, 40000);
        var (fw, fwOutput, _) = await server.RunAsync(Timeout, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", port.ToString(CultureInfo.InvariantCulture), "-j", "DROP");
        fw.Should().Be(0, fwOutput);
        await using var run = await StartCaptureAsync(output);

        // connect() gives up after 1.5 s: the first SYN and (usually) one retransmission are dropped.
        var (code, text, _) = await client.RunAsync(Timeout, "/usr/bin/python3", "-c", Connect,
            client.Address.ToString(), server.Address.ToString(), port.ToString(CultureInfo.InvariantCulture));
        code.Should().Be(0, text);
        int clientPort = int.Parse(text.Split('\n')[0].Trim(), CultureInfo.InvariantCulture);
        text.Should().Contain("timed out", "the SYNs must have been dropped, not refused");
        await run.Drains.WaitForMoreAsync(2, Timeout);

        var drops = KernelProbe.TakeQueued(run.Queue)
            .Where(e => e.Flow?.Verdict == Verdict.Dropped && e.Destination.Port == (uint)port)
            .ToList();
        drops.ForEach(e => output.WriteLine(e.ToString()));
        // The SYN and its retransmission 1 s later fall into different drain intervals: one event each.
        drops.Should().NotBeEmpty();
        foreach (var drop in drops)
        {
            drop.Type.Should().Be(EventType.Flow);
            drop.Node.Should().Be("drop-test");
            drop.Flow.DropReason.Should().Be("NETFILTER_DROP");
            drop.Flow.Protocol.Should().Be(Protocol.Tcp);
            drop.Flow.State.Should().Be("dropped");
            drop.Flow.Direction.Should().Be("ingress", "the SYN came in through the server pod's eth0");
            drop.Source.Ip.ToByteArray().Should().Equal(client.Address.GetAddressBytes());
            drop.Source.Port.Should().Be((uint)clientPort);
            drop.Destination.Ip.ToByteArray().Should().Equal(server.Address.GetAddressBytes());
            drop.Destination.Port.Should().Be((uint)port);
            // A SYN with options is 60 bytes from the IP header on; nothing owned it in the server pod.
            drop.Flow.BytesSent.Should().Be(drop.Flow.PacketsSent * 60);
            drop.Source.CgroupId.Should().Be(0);
            drop.Destination.CgroupId.Should().Be(0);
        }
        ulong packets = (ulong)drops.Sum(e => (long)e.Flow.PacketsSent);
        packets.Should().BeInRange(1, 3, "connect() gave up after 1.5 s: the SYN and at most a retransmission or two");

        var counters = new Dictionary<string, ulong>();
        run.Capture.AddCounters(counters);
        output.WriteLine(string.Join(", ", counters.Select(c => $"{c.Key}={c.Value}")));
        counters["drops_reported"].Should().BeGreaterThanOrEqualTo(packets);
        counters["drop_drain_errors"].Should().Be(0);
    }

    [Fact]
    public async Task Datagrams_dropped_on_their_way_out_are_aggregated_egress_drops_with_the_senders_cgroup()
    {
        const int Datagrams = 500;
        await using var t = await TestTopology.CreateAsync("a");
        var pod = t.Pods["a"];
        int port = Random.Shared.Next(30000, 40000);
        var (fw, fwOutput, _) = await pod.RunAsync(Timeout, "iptables", "-A", "OUTPUT", "-p", "udp", "--dport", port.ToString(CultureInfo.InvariantCulture), "-j", "DROP");
        fw.Should().Be(0, fwOutput);
        await using var run = await StartCaptureAsync(output);

        // An address on the pod's own subnet: routable, so the datagram reaches the OUTPUT chain.
        byte[] peer = pod.Address.GetAddressBytes();
        peer[3] = 250;
        var (code, text, _) = await pod.RunAsync(Timeout, "/usr/bin/python3", "-c", SendMany,
            pod.Address.ToString(), new System.Net.IPAddress(peer).ToString(), port.ToString(CultureInfo.InvariantCulture),
            Datagrams.ToString(CultureInfo.InvariantCulture));
        code.Should().Be(0, text);
        int clientPort = int.Parse(text.Trim(), CultureInfo.InvariantCulture);
        await run.Drains.WaitForMoreAsync(2, Timeout);

        var drops = KernelProbe.TakeQueued(run.Queue)
            .Where(e => e.Flow?.Verdict == Verdict.Dropped && e.Destination.Port == (uint)port)
            .ToList();
        output.WriteLine($"{drops.Count} events: {string.Join(", ", drops.Select(e => e.Flow.PacketsSent))} packets");
        // A storm of one 5-tuple costs the ring nothing: counts in one kernel entry per drain interval.
        drops.Sum(e => (long)e.Flow.PacketsSent).Should().Be(Datagrams);
        drops.Count.Should().BeLessThan(Datagrams / 10);
        foreach (var drop in drops)
        {
            drop.Flow.DropReason.Should().Be("NETFILTER_DROP");
            drop.Flow.Protocol.Should().Be(Protocol.Udp);
            drop.Flow.Direction.Should().Be("egress");
            drop.Source.Ip.ToByteArray().Should().Equal(pod.Address.GetAddressBytes());
            drop.Source.Port.Should().Be((uint)clientPort);
            drop.Destination.Ip.ToByteArray().Should().Equal(peer);
            drop.Source.CgroupId.Should().Be(pod.CgroupId, "the sending socket's cgroup");
            drop.Flow.BytesSent.Should().Be(drop.Flow.PacketsSent * (20 + 8 + 42));
        }
    }

    [Fact]
    public async Task Stopping_leaves_no_program_or_link_in_the_kernel()
    {
        IReadOnlyList<uint> ours;
        var status = new List<CapturePath>();
        await using (var run = await StartCaptureAsync(output))
        {
            ours = run.Capture.ProgramIds;
            status.AddRange(run.Capture.CapturePaths());
            ours.Should().ContainSingle().Which.Should().NotBe(0u);
            KernelProbe.LoadedProgramIds().Should().Contain(ours);
            KernelProbe.LinkedProgramIds().Should().Contain(ours);
            run.Capture.Reasons!.Code("NETFILTER_DROP").Should().NotBeNull();
        }

        status.Should().ContainSingle().Which.Should().BeEquivalentTo(new CapturePath
        {
            Signal = "drops",
            Program = "handle_kfree_skb",
            Path = "tp_btf/kfree_skb",
            State = "active",
            Reason = "",
        });
        KernelProbe.LoadedProgramIds().Should().NotIntersectWith(ours);
        KernelProbe.LinkedProgramIds().Should().NotIntersectWith(ours);
    }

    private const string Connect = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((sys.argv[1], 0))
        print(s.getsockname()[1], flush=True)
        s.settimeout(1.5)
        try:
            s.connect((sys.argv[2], int(sys.argv[3])))
            print("connected")
        except socket.timeout:
            print("timed out")
        except OSError as e:
            print(e)
        """;

    private const string SendMany = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sys.argv[1], 0))
        for _ in range(int(sys.argv[4])):
            try:
                s.sendto(b"z" * 42, (sys.argv[2], int(sys.argv[3])))
            except OSError:
                pass  # EPERM: the OUTPUT chain dropped it
        print(s.getsockname()[1])
        """;

    /// <summary>A started <see cref="DropCapture"/> with its queue; disposing stops it.</summary>
    private static Task<MapDrainCaptureRun<DropCapture>> StartCaptureAsync(ITestOutputHelper output)
    {
        var queue = new SensorEventQueue();
        var capture = new DropCapture(queue,
            Options.Create(new DropCaptureOptions { DrainInterval = TimeSpan.FromMilliseconds(100) }),
            Options.Create(new CaptureOptions { Node = "drop-test" }), new TestOutputLogger<DropCapture>(output));
        return MapDrainCaptureRun<DropCapture>.StartAsync(capture, queue, Timeout, "the drop capture");
    }
}
