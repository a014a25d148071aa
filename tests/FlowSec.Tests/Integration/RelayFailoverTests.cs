using System.Diagnostics;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Tests.Storage;
using Xunit.Abstractions;

namespace FlowSec.Tests.Integration;

/// <summary>
/// Relays are stateless: a sensor given two relays streams to the first, and when that one dies
/// (kill -9) it carries on with the second, re-sending what the first never acked, so every
/// connection made before, during and after the failover is stored.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class RelayFailoverTests(FlowSecStack stack, ITestOutputHelper output)
{
    private const string Node = "failover-node";
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_sensor_moves_to_the_next_relay_when_its_relay_dies_and_loses_nothing()
    {
        await using var topology = await TestTopology.CreateAsync("client", "server");
        var client = topology.Pods["client"];
        var server = topology.Pods["server"];
        var first = FlowSecStack.FreePort();
        var second = FlowSecStack.FreePort();
        await using var relayA = stack.StartRelay("relay-a", first, FlowSecStack.FreePort());
        await using var relayB = stack.StartRelay("relay-b", second, FlowSecStack.FreePort());
        using var clientA = new GrpcClient(new Uri($"http://127.0.0.1:{first}"), stack.Token);
        using var clientB = new GrpcClient(new Uri($"http://127.0.0.1:{second}"), stack.Token);
        // Both relays answer before the sensor starts: otherwise it may start on B and rightly stay there.
        await stack.WaitForStatusAsync(s => s.StorageOk, relayA, "relay A", clientA);
        await stack.WaitForStatusAsync(s => s.StorageOk, relayB, "relay B", clientB);
        await using var sensor = stack.StartSensor("failover-sensor", new Uri($"http://127.0.0.1:{first}"), Node, FlowSecStack.FreePort(),
            $"--Sensor:Relay=http://127.0.0.1:{first},http://127.0.0.1:{second}", $"--Sensor:Cgroup={client.CgroupPath}",
            $"--Sensor:SpoolDirectory={Path.Combine(stack.Dir, "failover-spool")}");
        await stack.WaitForStatusAsync(s => s.Nodes.Any(n => n.Node == Node && n.Connected &&
            n.Sensor is not null && n.Sensor.Capture.Any(c => c.Signal == "tcp" && c.State == "active")), sensor, "sensor streaming to relay A", clientA);

        await server.StartHttpServerAsync();
        var since = DateTimeOffset.UtcNow.AddSeconds(-1);
        var pids = new List<int>();
        async Task ConnectAsync(int count)
        {
            for (var i = 0; i < count; i++)
            {
                var curl = await client.RunAsync(Wait, "curl", "-sS", "-o", "/dev/null", $"http://{server.Address}/");
                curl.ExitCode.Should().Be(0, curl.Output);
                pids.Add(curl.Pid);
            }
        }

        await ConnectAsync(20);
        Process.GetProcessById(relayA.ProcessId).Kill(); // SIGKILL: no goodbye to the sensor
        await ConnectAsync(20);

        await stack.WaitForStatusAsync(s => s.Nodes.Any(n => n.Node == Node && n.Connected), sensor, "sensor moved to relay B", clientB);
        var stored = new Dictionary<uint, int>();
        await Eventually.HoldsAsync(async () =>
        {
            stored.Clear();
            var request = new GetEventsRequest { SinceUnixNano = (ulong)since.ToUnixTimeMilliseconds() * 1_000_000 };
            request.Allow.Add(new EventFilter { Node = { Node }, DestinationPort = { 80 }, EventType = { EventType.Flow } });
            await foreach (var e in stack.Client.ServerStreamingAsync(RelayMethods.GetEvents, request, Event.Parser, CancellationToken.None))
            {
                if (e.Flow.Direction == "egress" && e.Source.Pid != 0)
                {
                    stored[e.Source.Pid] = stored.GetValueOrDefault(e.Source.Pid) + 1;
                }
            }
            return pids.All(p => stored.ContainsKey((uint)p));
        }, Wait, () => $"{pids.Count(p => stored.ContainsKey((uint)p))} of {pids.Count} connections stored\n{sensor.Tail(20)}");

        var node = (await stack.StatusAsync(clientB)).Nodes.Single(n => n.Node == Node);
        node.Sensor.Counters["export_relay_failovers"].Should().BeGreaterThanOrEqualTo(1);
        output.WriteLine($"{pids.Count} connections made, {pids.Count(p => stored.ContainsKey((uint)p))} stored, " +
            $"{stored.Values.Sum() - stored.Count} stored twice (a batch relay A stored but never acked), " +
            $"{node.Sensor.Counters["export_relay_failovers"]} failovers");
    }
}
