using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;

namespace FlowSec.Tests.Integration;

/// <summary>
/// A sensor whose relay is away spools to disk, and everything it captured meanwhile reaches
/// ClickHouse once a relay answers — here a second, freshly started relay on the same ClickHouse,
/// which is also how stateless relays behind one address behave.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class RelayOutageTests(FlowSecStack stack)
{
    private const string Node = "spool-node";

    [Fact]
    public async Task Events_captured_while_the_relay_is_down_arrive_when_it_is_back()
    {
        var relayPort = FlowSecStack.FreePort();
        var spool = Path.Combine(stack.Dir, "spool");
        await using var sensor = stack.StartSensor("spool-sensor", new Uri($"http://127.0.0.1:{relayPort}"), Node,
            FlowSecStack.FreePort(), $"--Sensor:SpoolDirectory={spool}");

        // Connections while no relay listens: the sensor must hold (and spool) their flows.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var since = DateTimeOffset.UtcNow.AddSeconds(-1);
        await WaitAsync(() => sensor.Tail(200).Contains("attached", StringComparison.Ordinal), sensor, "BPF attach");
        var clientPorts = new HashSet<uint>();
        for (var i = 0; i < 5; i++)
        {
            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, port);
            using var accepted = await listener.AcceptTcpClientAsync();
            clientPorts.Add((uint)((IPEndPoint)client.Client.LocalEndPoint!).Port);
        }
        await WaitAsync(() => Directory.Exists(spool) && Directory.EnumerateFiles(spool, "*.batch").Any(), sensor, "spooled batches");

        await using var relay = stack.StartRelay("relay-2", relayPort, FlowSecStack.FreePort());

        var stored = new HashSet<uint>();
        var watch = Stopwatch.StartNew();
        while (!clientPorts.IsSubsetOf(stored) && watch.Elapsed < TimeSpan.FromSeconds(30))
        {
            var request = new GetEventsRequest { SinceUnixNano = (ulong)since.ToUnixTimeMilliseconds() * 1_000_000 };
            await foreach (var e in stack.Client.ServerStreamingAsync(FlowSec.Api.Grpc.RelayMethods.GetEvents, request, Event.Parser, CancellationToken.None))
            {
                if (e.Node == Node && e.Type == EventType.Flow && e.Destination?.Port == (uint)port)
                {
                    stored.Add(e.Source.Port);
                }
            }
            await Task.Delay(100);
        }
        stored.Should().BeEquivalentTo(clientPorts, $"every connection made during the outage is stored\n{sensor.Tail(30)}\n{relay.Tail(20)}");
        await WaitAsync(() => !Directory.EnumerateFiles(spool, "*.batch").Any(), sensor, "spool emptied after acks");
    }

    private static async Task WaitAsync(Func<bool> condition, ChildProcess sensor, string what)
    {
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            sensor.Exited.IsCompleted.Should().BeFalse(sensor.Tail(30));
            watch.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(30), $"waiting for {what}\n{sensor.Tail(30)}");
            await Task.Delay(50);
        }
    }
}
