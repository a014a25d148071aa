using System.Diagnostics;
using System.Net;
using FlowSec.Api.V1;
using Xunit.Abstractions;

namespace FlowSec.Tests.Integration;

/// <summary>
/// Full node capture on the real kernel with three pods (client, server, dns): every signal a
/// user relies on arrives with its exact attribution, and nothing is pinned on the wrong pod.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class NodeCaptureTests(FlowSecStack stack, ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Every_signal_from_a_client_pod_is_captured_and_attributed()
    {
        await using var topology = await TestTopology.CreateAsync("client", "server", "dns");
        var client = topology.Pods["client"];
        var server = topology.Pods["server"];
        var dns = topology.Pods["dns"];
        var since = DateTimeOffset.UtcNow.AddSeconds(-1);

        dns.Start("dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", $"--listen-address={dns.Address}",
            "--local=/flowsec.test/", $"--address=/web.flowsec.test/{server.Address}", "--user=root");
        server.Start("/usr/bin/python3", "-m", "http.server", "80", "--bind", server.Address.ToString());
        topology.SetResolver(client, dns.Address);
        await WaitUntilAsync(async () => (await server.RunAsync(Wait, "ss", "-Htln", "sport = :80")).Output.Contains(":80", StringComparison.Ordinal));
        await WaitUntilAsync(async () => (await client.RunAsync(Wait, "dig", "+short", "+time=1", "+tries=1", $"@{dns.Address}", "web.flowsec.test")).Output.Trim() == server.Address.ToString());
        (await server.RunAsync(Wait, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "81", "-j", "DROP")).ExitCode.Should().Be(0);

        // What a user does in the client pod.
        var curl = await client.RunAsync(Wait, "curl", "-sS", "-o", "/dev/null", "http://web.flowsec.test/");
        curl.ExitCode.Should().Be(0, curl.Output);
        var refused = await client.RunAsync(Wait, "curl", "-sS", "--max-time", "3", $"http://{server.Address}:9/");
        refused.ExitCode.Should().NotBe(0);
        var dropped = await client.RunAsync(Wait, "curl", "-sS", "--max-time", "2", $"http://{server.Address}:81/");
        dropped.ExitCode.Should().NotBe(0);
        var udp = await client.RunAsync(Wait, "/usr/bin/python3", "-c",
            $"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x'*100, ('{server.Address}', 5000)) for _ in range(3)]");
        udp.ExitCode.Should().Be(0, udp.Output);
        var shadow = await client.RunAsync(Wait, "cat", "/etc/shadow");
        shadow.ExitCode.Should().Be(0);
        var id = await client.RunAsync(Wait, "sh", "-c", "id");
        id.ExitCode.Should().Be(0);

        bool FromClient(Endpoint? e) => e is not null && e.Workload == "client" && e.CgroupId == client.CgroupId;
        var serverIp = server.Address.GetAddressBytes();

        // Other tests' topologies resolve the same name to their own servers: this pod's lookup is the one from its cgroup.
        var lookup = await Stored(e => e.Type == EventType.Dns && e.Dns.Query == "web.flowsec.test" && e.Dns.Qtype == "A"
                                       && e.Source?.CgroupId == client.CgroupId, since);
        lookup.Dns.Rcode.Should().Be("NOERROR");
        lookup.Dns.Answers.Select(a => a.Data).Should().Contain(server.Address.ToString());
        lookup.Source.Workload.Should().Be("client");
        lookup.Destination.Workload.Should().Be("dns");

        var http = await Stored(e => e.Type == EventType.Flow && e.Flow.Direction == "egress" && e.Destination?.Port == 80 &&
                                     e.Source?.Pid == (uint)curl.Pid, since);
        FromClient(http.Source).Should().BeTrue();
        http.Source.Process.Should().Be("curl");
        http.Destination.Workload.Should().Be("server");
        http.Destination.Names.Should().Contain("web.flowsec.test", "the remote side carries the name it was resolved from");

        var closedPort = await Stored(e => e.Type == EventType.Flow && e.Source?.Pid == (uint)refused.Pid && e.Destination?.Port == 9, since);
        closedPort.Flow.State.Should().Be("refused");

        var drop = await Stored(e => e.Type == EventType.Flow && e.Flow.Verdict == Verdict.Dropped && e.Destination?.Port == 81, since);
        drop.Flow.DropReason.Should().Be("NETFILTER_DROP");
        drop.Destination.Ip.ToByteArray().Should().Equal(serverIp);

        // Nothing listens on 5000, so the server's kernel also drops them (NO_SOCKET): that drop is
        // a flow too, attributed by address only. Which of the two is stored first is a race.
        var datagrams = await Stored(e => e.Type == EventType.Flow && e.Flow.Protocol == Protocol.Udp && e.Destination?.Port == 5000
            && e.Flow.Verdict == Verdict.Forwarded, since);
        FromClient(datagrams.Source).Should().BeTrue();
        datagrams.Flow.BytesSent.Should().BeGreaterThanOrEqualTo(300);

        var read = await Stored(e => e.Type == EventType.File && e.File.Path == "/etc/shadow" && e.Source?.Pid == (uint)shadow.Pid, since);
        read.Source.Process.Should().Be("cat");
        FromClient(read.Source).Should().BeTrue();

        var exec = await Stored(e => e.Type == EventType.Exec && e.Process.Exe.EndsWith("/id", StringComparison.Ordinal) && e.Process.Ppid == (uint)id.Pid, since);
        FromClient(exec.Source).Should().BeTrue();
        exec.Process.ParentExe.Should().EndWith("sh");

        // Nothing is pinned on the wrong pod: an endpoint in a pod's cgroup carries that pod's
        // name, and a pod's name appears only on endpoints in its cgroup (or on remote addresses
        // that belong to it). Processes are judged by the cgroup they were in at the event.
        var pods = new[] { client, server, dns };
        var all = await StoredEvents(since);
        var endpoints = all.SelectMany(e => new[] { e.Source, e.Destination }).Where(ep => ep is not null).ToList();
        foreach (var pod in pods)
        {
            endpoints.Where(ep => ep!.CgroupId == pod.CgroupId && ep.Workload != pod.Name)
                .Select(ep => $"{ep!.Process}({ep.Pid}) in {pod.Name}'s cgroup named '{ep.Workload}'")
                .Should().BeEmpty();
            // (A pod of the same name in another test's topology is not this pod, and rightly named so.)
            endpoints.Where(ep => ep!.Workload == pod.Name && ep.CgroupId != 0 && ep.CgroupId != pod.CgroupId &&
                                  TestTopology.PodCgroups.GetValueOrDefault(ep.CgroupId) != pod.Name)
                .Select(ep => $"{ep!.Process}({ep.Pid}) in cgroup {ep.CgroupId} named '{pod.Name}'")
                .Should().BeEmpty();
        }
        output.WriteLine($"{all.Count} events stored during the test");
    }

    private async Task<Event> Stored(Func<Event, bool> match, DateTimeOffset since) => await stack.WaitForStoredEventAsync(match, Wait, since);

    private async Task<List<Event>> StoredEvents(DateTimeOffset since)
    {
        var events = new List<Event>();
        var request = new GetEventsRequest { SinceUnixNano = (ulong)since.ToUnixTimeMilliseconds() * 1_000_000 };
        await foreach (var e in stack.Client.ServerStreamingAsync(FlowSec.Api.Grpc.RelayMethods.GetEvents, request, Event.Parser, CancellationToken.None))
        {
            events.Add(e);
        }
        return events;
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var watch = Stopwatch.StartNew();
        while (!await condition())
        {
            watch.Elapsed.Should().BeLessThan(Wait);
            await Task.Delay(100);
        }
    }
}
