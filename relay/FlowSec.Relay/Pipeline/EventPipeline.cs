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
    private readonly Channel<StorageItem> _storage;
    private readonly IEnumerable<ILiveEventSink> _liveSinks;
    private long _received;

    /// <summary>Creates the pipeline with the registered live sinks.</summary>
    public EventPipeline(IEnumerable<ILiveEventSink> liveSinks, int storageCapacityBatches = 256)
    {
        _liveSinks = liveSinks;
        _storage = Channel.CreateBounded<StorageItem>(new BoundedChannelOptions(storageCapacityBatches)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
        });
    }

    /// <summary>Events received from all sensors since start.</summary>
    public long EventsReceived => Interlocked.Read(ref _received);

    /// <summary>Batches waiting for storage.</summary>
    public ChannelReader<StorageItem> StorageQueue => _storage.Reader;

    /// <summary>
    /// Publishes a batch. Awaiting it waits while the storage queue is full (backpressure); the
    /// task it returns completes once storage holds the batch, which is when ingest acks it.
    /// </summary>
    public async ValueTask<Task> PublishAsync(EventBatch batch, CancellationToken cancellationToken)
    {
        var stored = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await _storage.Writer.WriteAsync(new StorageItem(batch, stored), cancellationToken);
        Interlocked.Add(ref _received, batch.Events.Count);
        foreach (var sink in _liveSinks)
        {
            sink.Publish(batch.Events);
        }
        return stored.Task;
    }
}

/// <summary>A batch on its way to storage, with the promise storage keeps once it holds it.</summary>
/// <param name="Batch">The events.</param>
/// <param name="Stored">Completed by the writer after the insert that holds the batch succeeded.</param>
public readonly record struct StorageItem(EventBatch Batch, TaskCompletionSource Stored);

/// <summary>Receives every event as it arrives, for live views. Must not block.</summary>
public interface ILiveEventSink
{
    /// <summary>Called on the ingest path for each batch; implementations hand off and return.</summary>
    void Publish(IReadOnlyList<Event> events);
}
