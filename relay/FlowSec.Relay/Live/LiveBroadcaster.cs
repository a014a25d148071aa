using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using FlowSec.Api.Json;
using FlowSec.Api.V1;
using FlowSec.Relay.Pipeline;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FlowSec.Relay.Live;

/// <summary>
/// Fans events out to every browser on <see cref="LiveHub"/>. Ingest hands events to a bounded
/// queue and returns at once; when browsers (or the network to them) fall behind, events are
/// dropped and counted rather than slowing ingest. A background loop sends what is queued as
/// SignalR message <c>"events"</c>: an array of event objects in <see cref="EventJson"/> form.
/// </summary>
public sealed class LiveBroadcaster : BackgroundService, ILiveEventSink
{
    /// <summary>Events queued for browsers at most; more are dropped.</summary>
    public const int QueueCapacity = 10_000;

    /// <summary>Events sent in one message at most.</summary>
    public const int MaxEventsPerMessage = 500;

    private readonly Channel<Event> _queue;
    private readonly IHubContext<LiveHub> _hub;
    private readonly ILogger<LiveBroadcaster> _log;
    private long _dropped;
    private long _sendErrors;
    private long _sent;
    private int _clients;

    /// <summary>Creates the broadcaster.</summary>
    public LiveBroadcaster(IHubContext<LiveHub> hub, ILogger<LiveBroadcaster> log, int queueCapacity = QueueCapacity)
    {
        _hub = hub;
        _log = log;
        // Wait mode makes TryWrite report a full queue (DropWrite would claim success), so drops are counted.
        _queue = Channel.CreateBounded<Event>(new BoundedChannelOptions(queueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
        });
    }

    /// <summary>Events dropped because the queue to browsers was full.</summary>
    public long EventsDropped => Interlocked.Read(ref _dropped);

    /// <summary>Events sent to browsers (once per event, whatever the number of clients).</summary>
    public long EventsSent => Interlocked.Read(ref _sent);

    /// <summary>Messages that could not be sent; their events are lost for the live view (storage is unaffected).</summary>
    public long SendErrors => Interlocked.Read(ref _sendErrors);

    /// <summary>Browsers connected to the hub now.</summary>
    public int ConnectedClients => Volatile.Read(ref _clients);

    /// <inheritdoc />
    /// <remarks>True while a browser is connected to the hub.</remarks>
    public bool HasConsumers => ConnectedClients > 0;

    /// <inheritdoc />
    public void Publish(IReadOnlyList<Event> events)
    {
        foreach (var e in events)
        {
            if (!_queue.Writer.TryWrite(e))
            {
                Interlocked.Increment(ref _dropped);
            }
        }
    }

    internal void ClientConnected() => Interlocked.Increment(ref _clients);

    internal void ClientDisconnected() => Interlocked.Decrement(ref _clients);

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var reader = _queue.Reader;
        var batch = new List<Event>(MaxEventsPerMessage);
        try
        {
            while (await reader.WaitToReadAsync(stoppingToken))
            {
                while (batch.Count < MaxEventsPerMessage && reader.TryRead(out var e))
                {
                    batch.Add(e);
                }

                try
                {
                    await _hub.Clients.All.SendAsync("events", new LiveEventBatch(batch.ToArray()), stoppingToken);
                    Interlocked.Add(ref _sent, batch.Count);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // One bad message must not end the live view for everyone.
                    Interlocked.Increment(ref _sendErrors);
                    _log.LogWarning(e, "Sending {Count} live events failed", batch.Count);
                }

                batch.Clear();
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>One "events" message; serialized straight through <see cref="EventJson"/> by SignalR's JSON protocol.</summary>
    [JsonConverter(typeof(Converter))]
    private sealed record LiveEventBatch(IReadOnlyList<Event> Events)
    {
        private sealed class Converter : JsonConverter<LiveEventBatch>
        {
            public override LiveEventBatch Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
                throw new NotSupportedException("Live event batches are only sent.");

            public override void Write(Utf8JsonWriter writer, LiveEventBatch value, JsonSerializerOptions options)
            {
                writer.WriteStartArray();
                foreach (var e in value.Events)
                {
                    EventJson.Write(writer, e);
                }

                writer.WriteEndArray();
            }
        }
    }
}
