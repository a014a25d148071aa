using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Relay.Pipeline;

namespace FlowSec.Relay.Ingest;

/// <summary>
/// <c>flowsec.v1.Ingest/Push</c>: sensors stream event batches; each batch is acked once the
/// pipeline holds it. The ack waits while the storage queue is full, which is how a slow
/// ClickHouse slows sensors down instead of growing relay memory.
/// </summary>
public sealed class IngestService(EventPipeline pipeline, NodeRegistry nodes, RecentBatches recent, ILogger<IngestService> logger)
{
    /// <summary>Handles one sensor stream until the sensor closes it.</summary>
    public async Task PushAsync(IAsyncEnumerable<EventBatch> batches, GrpcResponseStream<IngestAck> acks,
        GrpcCallContext call)
    {
        string? node = null;
        var pendingAcks = new List<Task>();
        try
        {
            await foreach (var batch in batches.WithCancellation(call.CancellationToken))
            {
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
                nodes.Received(batch);
                var (stored, _) = await recent.AcceptAsync(batch.Node, batch.BatchId,
                    () => pipeline.PublishAsync(batch, call.CancellationToken));
                // Ack once ClickHouse holds it (at-least-once); keep reading meanwhile, the
                // sensor's window of unacked batches bounds how many wait here.
                pendingAcks.Add(AckWhenStoredAsync(stored, batch, acks));
                if (pendingAcks.Count > 1024)
                {
                    pendingAcks.RemoveAll(t => t.IsCompleted);
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
            if (node is not null)
            {
                nodes.Disconnected(node);
                logger.LogInformation("Node {Node} disconnected", node);
            }
        }
    }

    private static async Task AckWhenStoredAsync(Task stored, EventBatch batch, GrpcResponseStream<IngestAck> acks)
    {
        try
        {
            await stored;
            await acks.WriteAsync(new IngestAck { BatchId = batch.BatchId, Accepted = (uint)batch.Events.Count });
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or ObjectDisposedException)
        {
            // The stream ended first: the sensor re-sends the batch after reconnecting (and the id dedups it).
        }
    }
}
