using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Relay.Storage;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Integration;

/// <summary>
/// Relays are stateless behind one address, so a sensor whose stream broke re-sends its unacked
/// batches to whichever relay answers. A batch still queued on the first relay (its ClickHouse
/// away) when the stream broke must not be stored there as well as on the second: the first
/// relay withdraws it, and it is stored exactly once.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class WithdrawnBatchTests(FlowSecStack stack)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task A_batch_queued_on_a_relay_without_clickhouse_and_resent_to_another_relay_is_stored_once()
    {
        var node = "withdraw-" + Guid.NewGuid().ToString("N")[..8];
        await using var clickHouseOfA = new InsertHoldingProxy(stack.ClickHouse.HttpPort) { Refusing = true };
        int portA = FlowSecStack.FreePort(), uiA = FlowSecStack.FreePort();
        using var clientA = new GrpcClient(new Uri($"http://127.0.0.1:{portA}"), stack.Token);
        await using var relayA = stack.StartRelay("withdraw-relay-a", portA, uiA, clickHouseOfA.Url);
        await stack.WaitForStatusAsync(s => !s.StorageOk, relayA, "relay A answering, its ClickHouse refused", clientA);

        // Relay A queues the batch: its writer cannot reach ClickHouse, so it is not acked. Then the stream breaks.
        var batch = Batch(node, 1001, 0);
        using (var broken = new CancellationTokenSource(Timeout))
        {
            await using var call = await clientA.DuplexAsync<EventBatch, IngestAck>(RelayMethods.Push, IngestAck.Parser, broken.Token);
            await call.WriteAsync(batch, broken.Token);
            await Eventually.HoldsAsync(async () => (await stack.StatusAsync(clientA)).EventsReceived == (ulong)batch.Events.Count,
                Timeout, () => "relay A received the batch\n" + relayA.Tail(20));
            await broken.CancelAsync();
        }
        await Eventually.HoldsAsync(async () => (await stack.StatusAsync(clientA)).Nodes.Any(n => n.Node == node && !n.Connected),
            Timeout, () => "relay A saw the stream end\n" + relayA.Tail(20));

        // The sensor re-sends it to relay B (the stack's relay, ClickHouse healthy): no ledger record, so B stores it.
        var resent = Batch(node, 1001, 0);
        resent.Resent = true;
        (await PushAsync(stack.Client, resent)).Should().Be(resent.BatchId, "relay B acks once ClickHouse holds it");

        // ClickHouse is back for relay A. A batch sent after the broken one is acked once the writer
        // has stored (or skipped) everything queued before it.
        clickHouseOfA.Refusing = false;
        (await PushAsync(clientA, Batch(node, 1002, 100))).Should().Be(1002UL);

        using var clickHouse = new ClickHouseHttpClient(new ClickHouseOptions { Url = stack.ClickHouse.Url });
        var rows = await clickHouse.QueryTextAsync(
            $"SELECT batch_id, count() FROM flowsec.flows WHERE node = {SqlLiteral.String(node)} GROUP BY batch_id ORDER BY batch_id FORMAT TabSeparated");
        rows.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal(
            [$"1001\t{batch.Events.Count}", $"1002\t{batch.Events.Count}"], "the re-sent batch is stored once, by relay B\n" + relayA.Tail(30));

        var status = await stack.StatusAsync(clientA);
        status.BatchesWithdrawn.Should().Be(1);
        status.EventsWithdrawn.Should().Be((ulong)batch.Events.Count);
        using var http = new HttpClient();
        var metrics = await http.GetStringAsync(new Uri($"http://127.0.0.1:{uiA}/metrics"));
        metrics.Should().Contain("flowsec_relay_batches_withdrawn_total 1\n").And.Contain($"flowsec_relay_events_withdrawn_total {batch.Events.Count}\n");
        var printed = new StringWriter();
        FlowSec.Cli.Status.StatusCommand.Print(printed, status, $"127.0.0.1:{portA}");
        printed.ToString().Should().Contain($"withdrawn unacked {batch.Events.Count} events (1 batches)");
    }

    private static EventBatch Batch(string node, ulong id, int first) => IngestPush.Flows(node, id, first);

    private static Task<ulong> PushAsync(GrpcClient client, EventBatch batch) => IngestPush.PushAsync(client, batch, Timeout);
}
