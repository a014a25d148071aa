using System.Diagnostics;
using System.Net;
using FlowSec.Api.V1;
using Xunit.Abstractions;

namespace FlowSec.Tests.Integration;

/// <summary>
/// The walking skeleton end to end on the real kernel: a connection between two test pods is
/// captured by the BPF program, streamed by the sensor, stored by the relay in ClickHouse, and
/// read back with the right addresses, ports, process and cgroup.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class KernelToStorageTests(FlowSecStack stack, ITestOutputHelper output)
{
    [Fact]
    public async Task Connection_between_pods_reaches_ClickHouse_attributed_to_curl()
    {
        await using var topology = await TestTopology.CreateAsync("server", "client");
        var server = topology.Pods["server"];
        var client = topology.Pods["client"];
        var serverProcess = server.Start("/usr/bin/python3", "-m", "http.server", "8080", "--bind", server.Address.ToString());
        await WaitForListenerAsync(server, 8080);

        var since = DateTimeOffset.UtcNow.AddSeconds(-1);
        var (code, body, curlPid) = await client.RunAsync(TimeSpan.FromSeconds(10),
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", $"http://{server.Address}:8080/");
        var connected = Stopwatch.StartNew();
        code.Should().Be(0, body);
        body.Should().Be("200");

        var flow = await stack.WaitForStoredEventAsync(
            e => e.Type == EventType.Flow && e.Source?.Pid == (uint)curlPid, TimeSpan.FromSeconds(20), since);
        output.WriteLine($"connection → row in ClickHouse: {connected.ElapsedMilliseconds} ms (includes polling at 100 ms)");

        flow.Node.Should().Be(FlowSecStack.Node);
        flow.Capture.Should().Be("bpf");
        new IPAddress(flow.Source.Ip.Span).Should().Be(client.Address);
        new IPAddress(flow.Destination.Ip.Span).Should().Be(server.Address);
        flow.Destination.Port.Should().Be(8080);
        flow.Source.Port.Should().BeInRange(1024, 65535);
        flow.Source.Process.Should().Be("curl");
        flow.Source.CgroupId.Should().Be(client.CgroupId);
        flow.Source.Workload.Should().Be("client", "a process in cgroup .../client is workload client");
        flow.Destination.Workload.Should().Be("server", "the remote IP belongs to the local server pod");
        flow.Flow.Protocol.Should().Be(Protocol.Tcp);
        flow.Flow.State.Should().Be("closed");
        flow.Flow.Direction.Should().Be("egress");
        flow.Flow.DurationNs.Should().BeGreaterThan(0).And.BeLessThan(10_000_000_000);
        flow.Flow.BytesSent.Should().BeGreaterThan(50, "curl sent an HTTP request");
        flow.Flow.BytesReceived.Should().BeGreaterThan(100, "the server answered with a directory listing");

        // The accepting side is captured too, attributed to the server process when it closes.
        var accepted = await stack.WaitForStoredEventAsync(
            e => e.Type == EventType.Flow && e.Flow.Direction == "ingress" && e.Destination?.Port == 8080 &&
                 e.Source?.Port == flow.Source.Port, TimeSpan.FromSeconds(20), since);
        accepted.Destination.Pid.Should().Be((uint)serverProcess.Id);
        accepted.Destination.Process.Should().Be("python3");
        accepted.Destination.CgroupId.Should().Be(server.CgroupId);
        accepted.Destination.Workload.Should().Be("server");
        accepted.Source.Workload.Should().Be("client");
    }

    private static async Task WaitForListenerAsync(TestPod pod, int port)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(15))
        {
            var (_, listening, _) = await pod.RunAsync(TimeSpan.FromSeconds(5), "ss", "-Htln", $"sport = :{port}");
            if (listening.Contains($":{port}", StringComparison.Ordinal))
            {
                return;
            }
            await Task.Delay(50);
        }
        throw new TimeoutException($"nothing listens on port {port} in pod {pod.Name}");
    }
}
