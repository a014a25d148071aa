using System.Diagnostics.CodeAnalysis;
using System.Threading.Channels;
using FlowSec.Api.V1;

namespace FlowSec.Relay.Pipeline;

/// <summary>
/// The relay's event pipeline: ingest publishes batches here; storage consumes them through a
/// bounded queue (so a slow ClickHouse pushes back on sensors instead of growing memory), and the
/// live fan-out sees each batch as it arrives. The queue is bounded in batches and in events: a
/// parsed event costs the relay about 1.5 KB of objects, so the events waiting for storage, not
/// the batches, are what its memory (and its garbage collector's work) grows with.
/// </summary>
public sealed class EventPipeline
{
    /// <summary>
    /// Events queued for storage at most by default: a few sensor batches, enough to keep the
    /// writer busy, while the parsed events stay young for the garbage collector (a queue of a
    /// million events held 4 GB and spent about half the relay's CPU in collections and page faults).
    /// </summary>
    public const int DefaultStorageCapacityEvents = 65_536;

    private readonly Channel<StorageItem> _storage;
    private readonly BudgetedReader _reader;
    private readonly IEnumerable<ILiveEventSink> _liveSinks;
    private readonly int _capacityEvents;
    private readonly Lock _budgetLock = new();
    private int _queuedEvents;
    private TaskCompletionSource? _space;
    private long _received;

    /// <summary>Creates the pipeline with the registered live sinks.</summary>
    /// <param name="liveSinks">Receive every batch as it arrives.</param>
    /// <param name="storageCapacityBatches">Batches queued for storage at most.</param>
    /// <param name="storageCapacityEvents">Events queued for storage at most (a batch larger than this is taken alone).</param>
    public EventPipeline(IEnumerable<ILiveEventSink> liveSinks, int storageCapacityBatches = 256, int storageCapacityEvents = DefaultStorageCapacityEvents)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(storageCapacityEvents);
        _liveSinks = liveSinks;
        _capacityEvents = storageCapacityEvents;
        _storage = Channel.CreateBounded<StorageItem>(new BoundedChannelOptions(storageCapacityBatches)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
        });
        _reader = new BudgetedReader(this);
    }

    /// <summary>Events received from all sensors since start.</summary>
    public long EventsReceived => Interlocked.Read(ref _received);

    /// <summary>Events waiting for storage now.</summary>
    public int EventsQueued
    {
        get
        {
            lock (_budgetLock)
            {
                return _queuedEvents;
            }
        }
    }

    /// <summary>Batches waiting for storage; reading one frees its events' room in the queue.</summary>
    public ChannelReader<StorageItem> StorageQueue => _reader;

    /// <summary>
    /// Publishes a batch. Awaiting it waits while the storage queue is full (backpressure); the
    /// task it returns completes once storage holds the batch, which is when ingest acks it.
    /// </summary>
    public async ValueTask<Task> PublishAsync(EventBatch batch, CancellationToken cancellationToken)
    {
        var events = batch.Events.Count;
        await ReserveAsync(events, cancellationToken);
        var stored = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            await _storage.Writer.WriteAsync(new StorageItem(batch, stored), cancellationToken);
        }
        catch
        {
            Release(events);
            throw;
        }

        Interlocked.Add(ref _received, events);
        foreach (var sink in _liveSinks)
        {
            sink.Publish(batch.Events);
        }
        return stored.Task;
    }

    private async ValueTask ReserveAsync(int events, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task space;
            lock (_budgetLock)
            {
                // An empty queue takes any batch, so one larger than the whole budget still goes through.
                if (_queuedEvents == 0 || _queuedEvents + events <= _capacityEvents)
                {
                    _queuedEvents += events;
                    return;
                }

                _space ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                space = _space.Task;
            }

            await space.WaitAsync(cancellationToken);
        }
    }

    private void Release(int events)
    {
        TaskCompletionSource? space;
        lock (_budgetLock)
        {
            _queuedEvents -= events;
            (space, _space) = (_space, null);
        }

        space?.TrySetResult();
    }

    /// <summary>The storage queue's reader: each batch read gives its events' room back to publishers.</summary>
    private sealed class BudgetedReader(EventPipeline pipeline) : ChannelReader<StorageItem>
    {
        private readonly ChannelReader<StorageItem> _inner = pipeline._storage.Reader;

        public override Task Completion => _inner.Completion;

        public override bool CanCount => _inner.CanCount;

        public override int Count => _inner.Count;

        public override bool TryRead([MaybeNullWhen(false)] out StorageItem item)
        {
            if (!_inner.TryRead(out item))
            {
                return false;
            }

            pipeline.Release(item.Batch.Events.Count);
            return true;
        }

        public override bool TryPeek([MaybeNullWhen(false)] out StorageItem item) => _inner.TryPeek(out item);

        public override ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken = default) => _inner.WaitToReadAsync(cancellationToken);
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
