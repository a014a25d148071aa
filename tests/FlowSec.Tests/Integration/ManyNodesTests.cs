using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;
using FlowSec.Tests.Storage;
using Xunit.Abstractions;

namespace FlowSec.Tests.Integration;

/// <summary>
/// Three sensors on one machine, each scoped to its own cgroup subtree, behave like three nodes
/// streaming to one relay: every event carries the node it happened on, no node reports another's
/// pods, and `flowsec status` lists all three with their rates.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class ManyNodesTests(FlowSecStack stack, ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);
    private static readonly string[] Names = ["node-a", "node-b", "node-c"];

    [Fact]
    public async Task Three_scoped_sensors_are_three_nodes_in_one_view()
    {
        await using var topology = await TestTopology.CreateAsync(Names);
        var sensors = new List<ChildProcess>();
        try
        {
            foreach (var name in Names)
            {
                sensors.Add(stack.StartSensor("sensor-" + name, stack.RelayAddress, name, FlowSecStack.FreePort(),
                    $"--Sensor:Cgroup={topology.Pods[name].CgroupPath}"));
            }
            await Eventually.HoldsAsync(async () =>
            {
                var status = await stack.StatusAsync();
                return Names.All(name => status.Nodes.Any(n => n.Node == name && n.Connected && n.Sensor is not null &&
                    n.Sensor.Capture.Any(c => c.Signal == "tcp" && c.State == "active") &&
                    n.Sensor.Capture.All(c => c.Reason != "not started")));
            }, Wait, () => "three scoped sensors up\n" + string.Join("\n", sensors.Select(s => s.Tail(15))));

            // Every node serves HTTP and calls the next one: each sees its own client and server side.
            var since = DateTimeOffset.UtcNow.AddSeconds(-1);
            foreach (var name in Names)
            {
                await topology.Pods[name].StartHttpServerAsync();
            }
            var curls = new Dictionary<string, int>();
            for (var i = 0; i < Names.Length; i++)
            {
                var pod = topology.Pods[Names[i]];
                var next = topology.Pods[Names[(i + 1) % Names.Length]];
                var curl = await pod.RunAsync(Wait, "curl", "-sS", "-o", "/dev/null", $"http://{next.Address}/");
                curl.ExitCode.Should().Be(0, curl.Output);
                curls[Names[i]] = curl.Pid;
            }

            var byNode = new Dictionary<string, List<Event>>();
            await Eventually.HoldsAsync(async () =>
            {
                foreach (var name in Names)
                {
                    byNode[name] = await stack.StoredEventsAsync(name, since);
                }
                return Names.All(name =>
                    byNode[name].Any(e => e.Type == EventType.Flow && e.Source?.Pid == (uint)curls[name] && e.Destination?.Port == 80) &&
                    byNode[name].Any(e => e.Type == EventType.Flow && e.Flow.Direction == "ingress" && e.Destination?.Port == 80) &&
                    byNode[name].Any(e => e.Type == EventType.Exec && e.Process.Pid == (uint)curls[name]));
            }, Wait, () => "each node's client and server flows and curl exec stored: " +
                string.Join(", ", byNode.Select(n => $"{n.Key}={n.Value.Count}")) + "\n" + string.Join("\n", sensors.Select(s => s.Tail(10))));

            foreach (var name in Names)
            {
                var own = topology.Pods[name].CgroupId;
                output.WriteLine($"{name}: {byNode[name].Count} events stored");
                // Every event a node reports has an endpoint in that node's cgroup: nothing from its neighbours.
                byNode[name].Should().OnlyContain(e => e.Source.CgroupId == own || e.Destination.CgroupId == own,
                    $"{name} reports only its own pod");
                var client = byNode[name].Single(e => e.Type == EventType.Flow && e.Source?.Pid == (uint)curls[name] && e.Destination?.Port == 80);
                client.Source.Workload.Should().Be(name);
                client.Source.Process.Should().Be("curl");
                var exec = byNode[name].Where(e => e.Type == EventType.Exec && e.Process.Exe.EndsWith("/curl", StringComparison.Ordinal));
                exec.Should().ContainSingle(e => e.Process.Pid == (uint)curls[name], "the exec of curl is the node's own");
            }

            // A sensor's counters ride on at most one batch a second (Sensor:StatusInterval) and on
            // its heartbeat, so the relay's copy may predate the batch that held the events above.
            var nodes = new List<NodeStatus>();
            await Eventually.HoldsAsync(async () =>
            {
                nodes = (await stack.StatusAsync()).Nodes.Where(n => Names.Contains(n.Node)).ToList();
                return nodes.Count == 3 && nodes.All(n => n.EventsReceived > 0 && n.Sensor?.Counters.GetValueOrDefault("scope_events_skipped") > 0);
            }, Wait, () => "each node's status counts events skipped out of scope: " +
                string.Join(", ", nodes.Select(n => $"{n.Node}={n.Sensor?.Counters.GetValueOrDefault("scope_events_skipped")}")));
            nodes.Should().HaveCount(3);
            nodes.Should().OnlyContain(n => n.EventsReceived > 0 && n.Sensor.Counters["scope_events_skipped"] > 0,
                "each scoped sensor sees the whole host's kernel events and leaves the others' out");
            foreach (var n in nodes)
            {
                output.WriteLine($"{n.Node}: received {n.EventsReceived}, {n.EventsPerSecond:0.0}/s, lag {n.LagMs} ms, skipped {n.Sensor.Counters["scope_events_skipped"]}");
            }
        }
        finally
        {
            foreach (var sensor in sensors)
            {
                await sensor.DisposeAsync();
            }
        }
    }
}
