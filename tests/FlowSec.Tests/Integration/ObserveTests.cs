using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;

namespace FlowSec.Tests.Integration;

/// <summary>`flowsec observe` and the observer API's filters against the running stack.</summary>
[Collection(StackCollection.Name)]
public sealed class ObserveTests(FlowSecStack stack)
{
    [Fact]
    public async Task Cli_filters_select_exactly_the_matching_flows()
    {
        using var a = new TcpListener(IPAddress.Loopback, 0);
        using var b = new TcpListener(IPAddress.Loopback, 0);
        a.Start();
        b.Start();
        var portA = ((IPEndPoint)a.LocalEndpoint).Port;
        var portB = ((IPEndPoint)b.LocalEndpoint).Port;
        var since = DateTimeOffset.UtcNow.AddSeconds(-1);
        await ConnectAsync(a);
        await ConnectAsync(b);
        await stack.WaitForStoredEventAsync(e => e.Destination?.Port == (uint)portB && e.Flow?.Direction == "egress", TimeSpan.FromSeconds(20), since);

        var lines = await Cli("observe", "--since", "2m", "--to-port", portA.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--type", "flow", "-o", "json");
        var events = lines.Select(l => JsonDocument.Parse(l).RootElement).ToList();
        events.Should().NotBeEmpty();
        events.Should().OnlyContain(e => e.GetProperty("destination").GetProperty("port").GetInt32() == portA);
        events.Should().Contain(e => e.GetProperty("flow").GetProperty("direction").GetString() == "egress" &&
                                     e.GetProperty("source").GetProperty("pid").GetInt32() == Environment.ProcessId);

        var bad = await CliFailure("observe", "--since", "2m", "--ip", "10.0.0.0/99");
        bad.Should().Contain("10.0.0.0/99");
        (await CliFailure("observe", "--protocol", "tcpp")).Should().Contain("unknown protocol 'tcpp'");
    }

    [Fact]
    public async Task Follow_with_a_filter_streams_only_matching_new_flows()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var request = new GetEventsRequest { Follow = true };
        request.Allow.Add(new EventFilter { DestinationPort = { (uint)port }, EventType = { EventType.Flow } });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var received = new List<Event>();
        var reader = Task.Run(async () =>
        {
            await foreach (var e in stack.Client.ServerStreamingAsync(RelayMethods.GetEvents, request, Event.Parser, cts.Token))
            {
                received.Add(e);
                if (received.Count >= 2)
                {
                    return;
                }
            }
        });
        // Connect until the subscription is surely open and has seen both sides of one connection.
        while (!reader.IsCompleted && !cts.IsCancellationRequested)
        {
            await ConnectAsync(listener);
            await Task.WhenAny(reader, Task.Delay(300));
        }
        await reader;
        received.Should().OnlyContain(e => e.Destination.Port == (uint)port);
    }

    private static async Task ConnectAsync(TcpListener listener)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndpoint).Port);
        using var accepted = await listener.AcceptTcpClientAsync();
    }

    private async Task<List<string>> Cli(params string[] args) => (await CliRunner.RunAsync(stack.RelayAddress, stack.TokenFilePath, 0, args)).Stdout;

    private async Task<string> CliFailure(params string[] args) => (await CliRunner.RunAsync(stack.RelayAddress, stack.TokenFilePath, -1, args)).Stderr;
}
