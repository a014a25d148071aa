using System.Diagnostics;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Integration;

/// <summary>
/// A sensor that vanishes without FIN or RST (its network gone, its host frozen) leaves a half-open
/// connection that TCP alone notices only many minutes later. The relay pings quiet HTTP/2
/// connections and closes one that does not answer: the node shows disconnected and its unacked
/// batches are withdrawn. A real half-open connection: relay and sensor in two network namespaces
/// of a test topology, the sensor's veth brought down so nothing more (not even a RST) arrives.
/// </summary>
public sealed class RelayLivenessTests : IDisposable
{
    // Short here so the test is quick; the defaults are 10 s and 20 s.
    private static readonly TimeSpan PingDelay = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan PingTimeout = TimeSpan.FromSeconds(2);

    // Far below TCP's own give-up time (minutes), far above delay + timeout + Kestrel's 1 s tick.
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private readonly string _dir = Directory.CreateTempSubdirectory("flowsec-liveness-").FullName;

    [Fact]
    public async Task A_sensor_whose_network_vanished_shows_disconnected_and_its_unacked_batch_is_withdrawn()
    {
        await using var topology = await TestTopology.CreateAsync("relay", "sensor");
        TestPod relayPod = topology.Pods["relay"], sensorPod = topology.Pods["sensor"];
        var tokenFile = Path.Combine(_dir, "token");
        var token = TokenFile.ReadOrCreate(tokenFile);
        var address = new Uri($"http://{relayPod.Address}:4245");

        // No ClickHouse answers inside the relay's namespace: batches stay queued, unacked, withdrawable.
        await using var relay = ChildProcess.Start("relay-liveness", "ip",
        [
            "netns", "exec", relayPod.Namespace, "dotnet", Path.Combine(AppContext.BaseDirectory, "FlowSec.Relay.dll"),
            $"--Relay:GrpcListen={relayPod.Address}:4245", "--Relay:UiListen=127.0.0.1:12000", $"--Relay:TokenFile={tokenFile}",
            $"--Relay:UiDirectory={Path.Combine(FlowSecStack.RepoRoot, "ui")}", "--ClickHouse:Url=http://127.0.0.1:9",
            "--Logging:LogLevel:Microsoft.AspNetCore=Warning", // not a line per status poll
            $"--Relay:KeepAlivePingDelay={PingDelay}", $"--Relay:KeepAlivePingTimeout={PingTimeout}",
        ], Path.Combine(_dir, "relay.log"));
        using var observer = new GrpcClient(address, token, NetworkNamespaceSockets.Handler(relayPod.Namespace));
        Task<StatusResponse> Status() =>
            observer.UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser, CancellationToken.None, TimeSpan.FromSeconds(5));
        await FlowSecStack.WaitForStatusAsync(Status, _ => true, relay, "relay answering");

        var node = "liveness-" + Guid.NewGuid().ToString("N")[..8];
        var batch = IngestPush.Flows(node, 5001, 0);
        using var sensor = new GrpcClient(address, token, NetworkNamespaceSockets.Handler(sensorPod.Namespace));
        using var open = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await using var call = await sensor.DuplexAsync<EventBatch, IngestAck>(RelayMethods.Push, IngestAck.Parser, open.Token);
        await call.WriteAsync(batch, open.Token);
        await FlowSecStack.WaitForStatusAsync(Status, s => s.Nodes.Any(n => n.Node == node && n.Connected && n.EventsReceived == (ulong)batch.Events.Count),
            relay, "the sensor's batch received");

        // A quiet but live connection answers the pings and stays: a stays-true check needs a wait,
        // here a few ping rounds (delay + timeout + Kestrel's 1 s tick, twice).
        await Task.Delay(2 * (PingDelay + PingTimeout + TimeSpan.FromSeconds(1)));
        (await Status()).Nodes.Single(n => n.Node == node).Connected.Should().BeTrue("a live sensor answers the pings\n" + relay.Tail(20));

        // The sensor's network vanishes: no FIN, no RST, the relay's packets go nowhere.
        await TestTopology.Sh($"ip -n {sensorPod.Namespace} link set eth0 down");
        var watch = Stopwatch.StartNew();
        await Eventually.HoldsAsync(async () => (await Status()).Nodes.Single(n => n.Node == node) is { Connected: false },
            Bound, () => $"the node still shows connected {Bound.TotalSeconds} s after its network vanished\n" + relay.Tail(30));
        var noticed = watch.Elapsed;

        var status = await Status();
        status.BatchesWithdrawn.Should().Be(1, "the stream ended with the batch unacked in the storage queue");
        status.EventsWithdrawn.Should().Be((ulong)batch.Events.Count);
        var printed = new StringWriter();
        FlowSec.Cli.Status.StatusCommand.Print(printed, status, address.Authority);
        printed.ToString().Split('\n').Single(l => l.StartsWith(node, StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1].Should().Be("down");
        // A vanished sensor is routine: said in one line, not as a relay failure with a stack trace.
        var log = relay.Tail(50);
        log.Should().Contain($"Node {node} disconnected", $"noticed after {noticed.TotalSeconds:0.0} s")
            .And.Contain("keep alive ping").And.NotContain("fail:");
    }

    [Fact]
    public async Task A_relay_refuses_a_keep_alive_ping_timeout_of_zero_at_start()
    {
        var tokenFile = Path.Combine(_dir, "token");
        TokenFile.ReadOrCreate(tokenFile);
        await using var relay = FlowSecStack.StartRelay("liveness-bad-relay", FlowSecStack.FreePort(), FlowSecStack.FreePort(), tokenFile,
            "http://127.0.0.1:9", _dir, "--Relay:KeepAlivePingTimeout=00:00:00");
        await relay.Exited.WaitAsync(TimeSpan.FromSeconds(30));
        relay.ExitCode.Should().Be(2);
        relay.Tail(10).Should().Contain("--Relay:KeepAlivePingTimeout");
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
