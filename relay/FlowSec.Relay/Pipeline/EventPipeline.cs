using System.Threading.Channels;
using FlowSec.Api.V1;

namespace FlowSec.Relay.Pipeline;

/// <summary>
/// The relay's event pipeline: ingest publishes batches here; storage consumes them through a
/// bounded queue (so a slow ClickHouse pushes back on sensors instead of growing memory), and the
/// live fan-out sees each batch as it arrives.
/// </summary>
public sealed class EventPipeline
{
    private readonly Channel<EventBatch> _storage;
    private readonly IEnumerable<ILiveEventSink> _liveSinks;
    private long _received;

    /// <summary>Creates the pipeline with the registered live sinks.</summary>
    public EventPipeline(IEnumerable<ILiveEventSink> liveSinks, int storageCapacityBatches = 256)
    {
        _liveSinks = liveSinks;
        _storage = Channel.CreateBounded<EventBatch>(new BoundedChannelOptions(storageCapacityBatches)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
        });
    }

    /// <summary>Events received from all sensors since start.</summary>
    public long EventsReceived => Interlocked.Read(ref _received);

    /// <summary>Batches waiting for storage.</summary>
    public ChannelReader<EventBatch> StorageQueue => _storage.Reader;

    /// <summary>Publishes a batch: waits while the storage queue is full (backpressure).</summary>
    public async ValueTask PublishAsync(EventBatch batch, CancellationToken cancellationToken)
    {
        await _storage.Writer.WriteAsync(batch, cancellationToken);
        Interlocked.Add(ref _received, batch.Events.Count);
        foreach (var sink in _liveSinks)
        {
            sink.Publish(batch.Events);
        }
    }
}

/// <summary>Receives every event as it arrives, for live views. Must not block.</summary>
public interface ILiveEventSink
{
    /// <summary>Called on the ingest path for each batch; implementations hand off and return.</summary>
    void Publish(IReadOnlyList<Event> events);
}
