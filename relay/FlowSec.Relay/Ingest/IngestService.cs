using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Relay.Pipeline;
using FlowSec.Relay.Storage;

namespace FlowSec.Relay.Ingest;

/// <summary>
/// <c>flowsec.v1.Ingest/Push</c>: sensors stream event batches; each batch is acked once the
/// pipeline holds it. The ack waits while the storage queue is full, which is how a slow
/// ClickHouse slows sensors down instead of growing relay memory. A batch the sensor marks as
/// re-sent, and this relay has not seen, is looked up in ClickHouse first: the part of it already
/// stored (by this relay before a restart, or another relay) is acked without storing it again.
/// </summary>
/// <remarks>
/// When a stream ends with batches unacked, the ones still waiting in the storage queue are
/// withdrawn (<see cref="EventPipeline.Withdraw"/>): the sensor re-sends them, maybe to another
/// relay, so this relay must not store them too. That closes the long window (a batch queued while
/// ClickHouse is slow or away, for as long as it stays away) at no cost. A batch the writer already
/// took into a block cannot be withdrawn; for it, the relay that receives the re-sent copy claims it
/// in ClickHouse before looking it up, and the writer here reads the claims before every insert
/// attempt and leaves claimed batches out, unacked (see <see cref="StoredBatches"/> for why that is
/// enough, and what risk remains). A batch left out while its stream is still open (a half-open
/// stream, a sensor that sent the batch elsewhere) ends the stream, so that sensor re-sends too.
/// Re-sent batches are looked up beside the stream's read loop, up to eight at a time, so the
/// look-ups' waits (other relays' running inserts, the claim margin) never hold the fresh batches
/// behind them, and a reconnect does not stall the sensor's window; their acks may go out of order.
/// </remarks>
public sealed class IngestService(EventPipeline pipeline, NodeRegistry nodes, RecentBatches recent, StoredBatches ledger, ClickHouseOptions storage,
    ILogger<IngestService> logger)
{
    // Re-sent batches of one stream looked up at once, at most (see PublishAsync).
    private const int ConcurrentLookupsPerStream = 8;

    // Flows go straight into Native columns; RowBinary inserts keep the object path.
    private readonly EventBatchDecoder _decoder = new(decodeFlows: storage.InsertFormat == ClickHouseInsertFormat.Native);

    /// <summary>
    /// Decodes one received <c>EventBatch</c> (on the stream's read loop, before it is queued or
    /// acked): flows into columns, other events into objects, and every event into an object too
    /// while a live view has a consumer.
    /// </summary>
    /// <exception cref="Google.Protobuf.InvalidProtocolBufferException">The bytes are not a valid batch.</exception>
    public ReceivedBatch Decode(ReadOnlySpan<byte> message) => _decoder.Decode(message, pipeline.HasLiveConsumers);

    /// <summary>Batches the fast decoder refused or failed on, which Google.Protobuf then parsed (or refused).</summary>
    public long BatchesHandedToProtobuf => _decoder.BatchesHandedToProtobuf;

    /// <summary>Handles one sensor stream until the sensor closes it.</summary>
    public async Task PushAsync(IAsyncEnumerable<ReceivedBatch> batches, GrpcResponseStream<IngestAck> acks,
        GrpcCallContext call)
    {
        string? node = null;
        var pendingAcks = new List<Task>();
        var unacked = new List<QueuedBatch>(); // this stream's batches still in the queue, to withdraw if the stream ends
        using var lookups = new SemaphoreSlim(ConcurrentLookupsPerStream);

        try
        {
            await foreach (var received in batches.WithCancellation(call.CancellationToken))
            {
                var batch = received.Batch;
                if (batch.Node.Length == 0)
                {
                    throw new GrpcException(GrpcStatusCode.InvalidArgument, "batch without a node name");
                }
                if (node is null)
                {
                    node = batch.Node;
                    nodes.Connected(node);
                    logger.LogInformation("Node {Node} connected from {Peer}", node, call.Http.Connection.RemoteIpAddress);
                }
                else if (node != batch.Node)
                {
                    throw new GrpcException(GrpcStatusCode.InvalidArgument,
                        $"stream opened by node {node} sent a batch for node {batch.Node}");
                }
                foreach (var e in batch.Events)
                {
                    e.Node = batch.Node;
                }
                nodes.Received(received, DateTimeOffset.UtcNow);
                var events = received.EventCount; // before a look-up (beside this loop) takes out events already stored
                var (stored, _) = await recent.AcceptAsync(batch.Node, batch.BatchId, events,
                    () => PublishAsync(received, unacked, lookups, call.CancellationToken));
                // Ack once ClickHouse holds it (at-least-once); keep reading meanwhile, the
                // sensor's window of unacked batches bounds how many wait here. The ack keeps the
                // id and count only: the events must not stay alive until their insert ends.
                pendingAcks.Add(AckWhenStoredAsync(stored, new IngestAck { BatchId = batch.BatchId, Accepted = (uint)events }, acks, call));
                if (pendingAcks.Count > 1024)
                {
                    pendingAcks.RemoveAll(t => t.IsCompleted);
                    lock (unacked)
                    {
                        unacked.RemoveAll(t => !t.IsQueued);
                    }
                }
            }
        }
        finally
        {
            // The sensor half-closed and waits for the last acks; stop waiting if it goes away.
            try
            {
                await Task.WhenAll(pendingAcks).WaitAsync(call.CancellationToken);
            }
            catch (OperationCanceledException)
            {
            }
            WithdrawUnacked(unacked, node);
            if (node is not null)
            {
                nodes.Disconnected(node);
                logger.LogInformation("Node {Node} disconnected", node);
            }
        }
    }

    // The stream ended: batches the writer has not taken are not stored here, the sensor re-sends them.
    private void WithdrawUnacked(List<QueuedBatch> unacked, string? node)
    {
        int batches = 0, events = 0;
        lock (unacked)
        {
            foreach (var ticket in unacked)
            {
                if (pipeline.Withdraw(ticket))
                {
                    batches++;
                    events += ticket.Events;
                }
            }

            unacked.Clear();
        }

        if (batches > 0)
        {
            logger.LogInformation("Stream of node {Node} ended with {Batches} unacked batches ({Events} events) still queued: withdrawn, the sensor re-sends them",
                node, batches, events);
        }
    }

    // Fresh batches go to the queue on the read loop (which is how backpressure reaches the sensor).
    // Re-sent ones are looked up beside it, a few at a time: a look-up can wait (for running inserts,
    // for the claim margin), and fresh batches behind it must not wait with it, or a reconnect after
    // a relay died mid-insert would hold the sensor's whole window for seconds. Acks then go out of
    // order, which sensors accept (they find each acked batch by id).
    private async ValueTask<Task> PublishAsync(ReceivedBatch received, List<QueuedBatch> unacked, SemaphoreSlim lookups, CancellationToken ct)
    {
        if (received.Batch.Resent && received.Batch.Events.Count > 0)
        {
            await lookups.WaitAsync(ct);
            return LookUpThenEnqueueAsync(received, unacked, lookups, ct);
        }

        return await EnqueueAsync(received, unacked, ct);
    }

    private async Task LookUpThenEnqueueAsync(ReceivedBatch received, List<QueuedBatch> unacked, SemaphoreSlim lookups, CancellationToken ct)
    {
        Task stored;
        try
        {
            stored = await EnqueueAsync(await WithoutStoredEventsAsync(received, ct), unacked, ct);
        }
        finally
        {
            lookups.Release();
        }

        await stored;
    }

    private async ValueTask<Task> EnqueueAsync(ReceivedBatch received, List<QueuedBatch> unacked, CancellationToken ct)
    {
        var ticket = await pipeline.EnqueueAsync(received, ct);
        lock (unacked)
        {
            unacked.Add(ticket);
        }

        return ticket.Stored.Task;
    }

    // Claims the re-sent batch and takes out its events already stored (by this relay before a
    // restart, or another relay). The decoder keeps re-sent batches as objects for this.
    private async Task<ReceivedBatch> WithoutStoredEventsAsync(ReceivedBatch received, CancellationToken ct)
    {
        var batch = received.Batch;
        IReadOnlySet<EventTable> held;
        try
        {
            held = await ledger.TablesHoldingAsync(batch, ct);
        }
        catch (ClickHouseException ex)
        {
            // Not knowing whether it is stored, the relay must not ack it: the sensor keeps it and sends it again.
            throw new GrpcException(GrpcStatusCode.Unavailable, "cannot check a re-sent batch against storage: " + ex.Message);
        }
        if (held.Count > 0)
        {
            var before = batch.Events.Count;
            var rest = batch.Events.Where(e => EventTables.For(e.Type) is not { } table || !held.Contains(table)).ToList();
            batch.Events.Clear();
            batch.Events.AddRange(rest);
            recent.CountSkipped(before - rest.Count);
            logger.LogInformation("Re-sent batch {BatchId} of {Node}: {Skipped} of {Events} events were stored before; not storing them again",
                batch.BatchId, batch.Node, before - rest.Count, before);
            await RecordDuplicateAsync(batch, before - rest.Count, ct);
            received = ReceivedBatch.FromObjects(batch);
        }

        return received;
    }

    private async Task RecordDuplicateAsync(EventBatch batch, int events, CancellationToken ct)
    {
        try
        {
            await ledger.RecordAsync([(batch.Node, batch.BatchId, events)], "duplicate", ct);
        }
        catch (ClickHouseException ex)
        {
            logger.LogWarning("Could not record duplicate batch {BatchId}: {Error}", batch.BatchId, ex.Message);
        }
    }

    private static async Task AckWhenStoredAsync(Task stored, IngestAck ack, GrpcResponseStream<IngestAck> acks, GrpcCallContext call)
    {
        try
        {
            await stored;
            await acks.WriteAsync(ack);
        }
        catch (OperationCanceledException) when (stored.IsCanceled && !call.CancellationToken.IsCancellationRequested)
        {
            // Withdrawn batches belong to streams that ended; this one is open, so the writer left the
            // batch out (another relay claimed a re-sent copy). Without its ack the sensor would wait
            // forever: end the stream, it re-sends.
            call.Http.Abort();
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or ObjectDisposedException)
        {
            // The stream ended first: the sensor re-sends the batch after reconnecting (and the id dedups it).
        }
        catch (GrpcException)
        {
            // A copy that waited for a withdrawn one could not be published again (storage unreachable):
            // without its ack the sensor would wait forever on a live stream, so end the stream; it re-sends.
            call.Http.Abort();
        }
    }
}
