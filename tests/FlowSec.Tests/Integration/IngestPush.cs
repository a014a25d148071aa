using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Integration;

/// <summary>What tests of a relay's ingest send as a sensor would: batches of flows, one batch per stream.</summary>
internal static class IngestPush
{
    /// <summary>Batch <paramref name="id"/> of <paramref name="node"/>: 20 flows, numbered from <paramref name="first"/>.</summary>
    public static EventBatch Flows(string node, ulong id, int first)
    {
        var batch = new EventBatch { Node = node, BatchId = id };
        for (var i = first; i < first + 20; i++)
        {
            var e = TestFlows.Flow(i);
            e.Node = node;
            batch.Events.Add(e);
        }

        return batch;
    }

    /// <summary>Sends one batch on a new stream and returns the id acked (within <paramref name="timeout"/>).</summary>
    public static async Task<ulong> PushAsync(GrpcClient client, EventBatch batch, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await using var call = await client.DuplexAsync<EventBatch, IngestAck>(RelayMethods.Push, IngestAck.Parser, cts.Token);
        await call.WriteAsync(batch, cts.Token);
        var ack = await call.ReadAsync(cts.Token);
        call.CompleteRequests();
        return ack!.BatchId;
    }
}
