using System.Diagnostics.CodeAnalysis;
using System.Threading.Channels;
using FlowSec.Api.V1;

namespace FlowSec.Relay.Pipeline;

/// <summary>
/// The relay's event pipeline: ingest publishes batches here; storage consumes them through a
/// bounded queue (so a slow ClickHouse pushes back on sensors instead of growing memory), and the
/// live fan-out sees each batch as it arrives (while it has consumers). The queue is bounded in
/// batches and in events: an event parsed into objects costs the relay about 1.5 KB, a flow decoded
/// into columns about 0.4 KB, so the events waiting for storage, not the batches, are what its memory
/// (and its garbage collector's work) grows with.
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
    private long _withdrawnBatches;
    private long _withdrawnEvents;

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

    /// <summary>Batches withdrawn from the storage queue before the writer took them (their stream ended unacked), so not stored by this relay.</summary>
    public long BatchesWithdrawn => Interlocked.Read(ref _withdrawnBatches);

    /// <summary>Events of <see cref="BatchesWithdrawn"/>.</summary>
    public long EventsWithdrawn => Interlocked.Read(ref _withdrawnEvents);

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
    public async ValueTask<Task> PublishAsync(EventBatch batch, CancellationToken cancellationToken) =>
        (await EnqueueAsync(batch, cancellationToken)).Stored.Task;

    /// <summary>
    /// Publishes a batch like <see cref="PublishAsync"/>, returning its place in the queue, which
    /// <see cref="Withdraw"/> can take back until the writer has taken it.
    /// </summary>
    public ValueTask<QueuedBatch> EnqueueAsync(EventBatch batch, CancellationToken cancellationToken) =>
        EnqueueAsync(ReceivedBatch.FromObjects(batch), cancellationToken);

    /// <summary>
    /// Publishes a received batch (events as objects, and rows decoded at ingest), returning its
    /// place in the queue. Live sinks with consumers get its <see cref="ReceivedBatch.LiveEvents"/>.
    /// </summary>
    public async ValueTask<QueuedBatch> EnqueueAsync(ReceivedBatch batch, CancellationToken cancellationToken)
    {
        var events = batch.EventCount;
        await ReserveAsync(events, cancellationToken);
        var ticket = new QueuedBatch(events);
        try
        {
            await _storage.Writer.WriteAsync(new StorageItem(batch.Batch, ticket) { Rows = batch.Rows }, cancellationToken);
        }
        catch
        {
            Release(events);
            throw;
        }

        Interlocked.Add(ref _received, events);
        if (batch.LiveEvents is { } live)
        {
            foreach (var sink in _liveSinks)
            {
                if (sink.HasConsumers)
                {
                    sink.Publish(live);
                }
            }
        }

        return ticket;
    }

    /// <summary>
    /// Whether some live sink has a consumer now (a follower, a browser): only then does ingest turn
    /// every event of a batch into an object for them.
    /// </summary>
    public bool HasLiveConsumers
    {
        get
        {
            foreach (var sink in _liveSinks)
            {
                if (sink.HasConsumers)
                {
                    return true;
                }
            }

            return false;
        }
    }

    /// <summary>
    /// Takes a queued batch back, if the writer has not taken it yet: it will not be stored, its
    /// room in the queue is free now, and its stored-task ends cancelled. False once the writer has
    /// it (then it is stored as usual). Ingest calls this for the unacked batches of a stream that
    /// ended: the sensor re-sends them, possibly to another relay, so storing them here too could
    /// store them twice.
    /// </summary>
    public bool Withdraw(QueuedBatch ticket)
    {
        if (!ticket.TryWithdraw())
        {
            return false;
        }

        Release(ticket.Events);
        Interlocked.Increment(ref _withdrawnBatches);
        Interlocked.Add(ref _withdrawnEvents, ticket.Events);
        ticket.Stored.TrySetCanceled();
        return true;
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

    /// <summary>
    /// The storage queue's reader: each batch read is taken (so it can no longer be withdrawn) and
    /// gives its events' room back to publishers; withdrawn batches are skipped (their room was
    /// given back when they were withdrawn).
    /// </summary>
    private sealed class BudgetedReader(EventPipeline pipeline) : ChannelReader<StorageItem>
    {
        private readonly ChannelReader<StorageItem> _inner = pipeline._storage.Reader;

        public override Task Completion => _inner.Completion;

        public override bool CanCount => _inner.CanCount;

        public override int Count => _inner.Count;

        public override bool TryRead([MaybeNullWhen(false)] out StorageItem item)
        {
            while (_inner.TryRead(out item))
            {
                if (item.Ticket.TryTake())
                {
                    pipeline.Release(item.Ticket.Events);
                    return true;
                }
            }

            return false;
        }

        public override bool TryPeek([MaybeNullWhen(false)] out StorageItem item)
        {
            // Single reader: a withdrawn batch at the head can be dropped here as well as in TryRead.
            while (_inner.TryPeek(out item))
            {
                if (!item.Ticket.IsWithdrawn)
                {
                    return true;
                }

                _inner.TryRead(out _);
            }

            return false;
        }

        public override ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken = default) => _inner.WaitToReadAsync(cancellationToken);
    }
}

/// <summary>A batch on its way to storage, with the promise storage keeps once it holds it.</summary>
/// <param name="Batch">The events.</param>
/// <param name="Ticket">Its place in the queue: taken by the writer, or withdrawn by ingest.</param>
public readonly record struct StorageItem(EventBatch Batch, QueuedBatch Ticket)
{
    /// <summary>Rows of the batch decoded at ingest into a table's columns (its events of that table's type are not in <see cref="Batch"/>), or null.</summary>
    internal Storage.NativeBlock? Rows { get; init; }

    /// <summary>Completed by the writer after the insert that holds the batch succeeded; cancelled if withdrawn.</summary>
    public TaskCompletionSource Stored => Ticket.Stored;
}

/// <summary>
/// A batch's place in the storage queue, without its events (so ingest can hold it until the ack
/// without keeping the events alive). It is queued until either the writer takes it or ingest
/// withdraws it; one atomic state decides which side won.
/// </summary>
/// <param name="events">The batch's events, whose queue room a withdrawal gives back.</param>
public sealed class QueuedBatch(int events)
{
    private const int Queued = 0;
    private const int Taken = 1;
    private const int Withdrawn = 2;

    private int _state;

    /// <summary>How many events the batch holds.</summary>
    public int Events { get; } = events;

    /// <summary>Completed by the writer after the insert that holds the batch succeeded; cancelled if withdrawn.</summary>
    public TaskCompletionSource Stored { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Neither taken by the writer nor withdrawn yet.</summary>
    public bool IsQueued => Volatile.Read(ref _state) == Queued;

    /// <summary>Whether ingest took the batch back before the writer took it.</summary>
    public bool IsWithdrawn => Volatile.Read(ref _state) == Withdrawn;

    /// <summary>The writer takes the batch; false if it was withdrawn first.</summary>
    internal bool TryTake() => Interlocked.CompareExchange(ref _state, Taken, Queued) == Queued;

    /// <summary>Ingest takes the batch back; false if the writer took it first (or it was withdrawn already).</summary>
    internal bool TryWithdraw() => Interlocked.CompareExchange(ref _state, Withdrawn, Queued) == Queued;
}

/// <summary>Receives every event as it arrives, for live views. Must not block.</summary>
public interface ILiveEventSink
{
    /// <summary>Called on the ingest path for each batch (while <see cref="HasConsumers"/>); implementations hand off and return.</summary>
    void Publish(IReadOnlyList<Event> events);

    /// <summary>
    /// Whether anyone consumes the events now. Cheap, called for every batch: while no sink has a
    /// consumer, ingest does not build <see cref="Event"/> objects for the flows it stores.
    /// </summary>
    bool HasConsumers => true;
}
