using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Tests.Storage;
using Xunit.Abstractions;

namespace FlowSec.Tests.Integration;

/// <summary>
/// The sensor `flowsec up` runs is compiled ahead of time (Native AOT), where reflection the
/// trimmer did not see fails only at run time. This runs that very binary: every capture comes
/// up as on the runtime build, and what it captures arrives attributed and stored.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class NativeSensorTests(FlowSecStack stack, ITestOutputHelper output)
{
    private const string Node = "native-node";
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task The_native_sensor_captures_and_attributes_like_the_runtime_build()
    {
        await using var topology = await TestTopology.CreateAsync("client", "server");
        var client = topology.Pods["client"];
        var server = topology.Pods["server"];
        await using var sensor = stack.StartNativeSensor("native-sensor", stack.RelayAddress, Node, FlowSecStack.FreePort(),
            $"--Sensor:Cgroup={Path.GetDirectoryName(client.CgroupPath)}");
        static bool Up(NodeStatus n) => n.Node == Node && n.Connected && n.Sensor is not null && n.Sensor.Capture.All(c => c.Reason != "not started");
        await stack.WaitForStatusAsync(s => s.Nodes.Any(Up), sensor, "native sensor");

        // The same capture paths as the runtime-built sensor of the stack, in the same states.
        var status = await stack.StatusAsync();
        var native = status.Nodes.Single(Up);
        var runtime = status.Nodes.Single(n => n.Node == FlowSecStack.Node);
        native.Sensor.Capture.Select(c => (c.Signal, c.Program, c.State)).Should()
            .BeEquivalentTo(runtime.Sensor.Capture.Select(c => (c.Signal, c.Program, c.State)));

        await server.StartHttpServerAsync();
        var since = DateTimeOffset.UtcNow.AddSeconds(-1);
        var curl = await client.RunAsync(Wait, "curl", "-sS", "-o", "/dev/null", $"http://{server.Address}/");
        curl.ExitCode.Should().Be(0, curl.Output);
        var shadow = await client.RunAsync(Wait, "cat", "/etc/shadow");
        shadow.ExitCode.Should().Be(0);

        List<Event> stored = [];
        await Eventually.HoldsAsync(async () =>
        {
            stored = await stack.StoredEventsAsync(Node, since);
            return stored.Any(e => e.Type == EventType.Flow && e.Source?.Pid == (uint)curl.Pid && e.Destination?.Port == 80) &&
                   stored.Any(e => e.Type == EventType.Flow && e.Flow.Direction == "ingress" && e.Destination?.Port == 80) &&
                   stored.Any(e => e.Type == EventType.Exec && e.Process.Pid == (uint)curl.Pid) &&
                   stored.Any(e => e.Type == EventType.File && e.File.Path == "/etc/shadow" && e.Source.Pid == (uint)shadow.Pid);
        }, Wait, () => $"{stored.Count} events stored from the native sensor\n{sensor.Tail(30)}");

        var flow = stored.First(e => e.Type == EventType.Flow && e.Source?.Pid == (uint)curl.Pid && e.Destination?.Port == 80);
        flow.Source.Process.Should().Be("curl");
        flow.Source.Workload.Should().Be("client");
        flow.Source.CgroupId.Should().Be(client.CgroupId);
        flow.Destination.Workload.Should().Be("server");
        flow.Flow.BytesReceived.Should().BeGreaterThan(0);
        flow.Capture.Should().Be("bpf");
        output.WriteLine($"native sensor: {stored.Count} events stored, RSS {NativeRssMb(sensor.ProcessId)} MB");
    }

    private static long NativeRssMb(int pid) =>
        File.ReadLines($"/proc/{pid}/status").Where(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Select(l => long.Parse(l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) / 1024)
            .FirstOrDefault();
}
