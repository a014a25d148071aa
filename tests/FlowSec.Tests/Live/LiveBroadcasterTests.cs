using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using FlowSec.Api.Json;
using FlowSec.Api.V1;
using FlowSec.Relay.Live;
using FlowSec.Tests.Storage;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace FlowSec.Tests.Live;

/// <summary>The broadcaster's queue and the hub's wire format, spoken by a raw SignalR JSON client.</summary>
public sealed class LiveBroadcasterTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    [Fact]
    public void A_full_queue_drops_and_counts_instead_of_blocking_ingest()
    {
        using var services = new ServiceCollection().AddLogging().AddSignalR().Services.BuildServiceProvider();
        var broadcaster = new LiveBroadcaster(services.GetRequiredService<IHubContext<LiveHub>>(), NullLogger<LiveBroadcaster>.Instance, queueCapacity: 3);

        // Not started: nothing drains, so the fourth and fifth events do not fit.
        broadcaster.Publish(TestFlows.Flows(5));

        broadcaster.EventsDropped.Should().Be(2);
    }

    [Fact]
    public async Task Hub_clients_receive_events_as_EventJson_objects()
    {
        await using var live = await LiveServer.StartAsync();
        using var ws = new ClientWebSocket();
        await ws.ConnectAsync(new Uri(live.Url.Replace("http://", "ws://") + "hub/live"), CancellationToken.None);
        await SendAsync(ws, """{"protocol":"json","version":1}""");
        (await ReceiveAsync(ws)).Should().Be("{}", "the handshake is accepted");
        await Eventually.HoldsAsync(() => live.Broadcaster.ConnectedClients == 1, Timeout, () => "client not registered");

        var flows = TestFlows.Flows(3);
        live.Sink.Publish(flows);

        JsonElement? events = null;
        while (events is null)
        {
            using var message = JsonDocument.Parse(await ReceiveAsync(ws));
            if (message.RootElement.GetProperty("type").GetInt32() == 1)
            {
                message.RootElement.GetProperty("target").GetString().Should().Be("events");
                events = message.RootElement.GetProperty("arguments")[0].Clone();
            }
        }

        // Same JSON values; SignalR's writer may escape characters differently from EventJson.ToJson.
        var received = events.Value.EnumerateArray().Select(e => JsonNode.Parse(e.GetRawText())).ToList();
        received.Should().HaveCount(flows.Count);
        for (var i = 0; i < flows.Count; i++)
        {
            JsonNode.DeepEquals(received[i], JsonNode.Parse(EventJson.ToJson(flows[i]))).Should().BeTrue($"event {i} is {EventJson.ToJson(flows[i])}, got {received[i]}");
        }

        await Eventually.HoldsAsync(() => live.Broadcaster.EventsSent == 3, Timeout, () => $"sent {live.Broadcaster.EventsSent}");
    }

    private static Task SendAsync(ClientWebSocket ws, string json) =>
        ws.SendAsync(Encoding.UTF8.GetBytes(json + "\u001e"), WebSocketMessageType.Text, true, CancellationToken.None);

    // One SignalR frame: JSON terminated by the record separator 0x1e.
    private static async Task<string> ReceiveAsync(ClientWebSocket ws)
    {
        using var timeout = new CancellationTokenSource(Timeout);
        var buffer = new byte[64 * 1024];
        var text = new StringBuilder();
        while (!text.ToString().EndsWith('\u001e'))
        {
            var result = await ws.ReceiveAsync(buffer, timeout.Token);
            text.Append(Encoding.UTF8.GetString(buffer, 0, result.Count));
        }

        return text.ToString().TrimEnd('\u001e');
    }
}
