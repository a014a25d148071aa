using System.Globalization;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Integration;

/// <summary>
/// A batch the first relay's writer already took into its block (so it can no longer be withdrawn)
/// when the sensor gave up on the stream, re-sent to a second relay, two real relay processes on one
/// ClickHouse: the second relay claims and stores it, the first leaves it out of its insert, and it
/// is stored exactly once, whether the first stream ended or was left open and silent (half-open).
/// </summary>
public sealed class ClaimedBatchTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>, IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);
    private readonly string _dir = Directory.CreateTempSubdirectory("flowsec-claims-").FullName;

    [Fact]
    public async Task A_batch_in_a_block_of_a_relay_whose_stream_ended_and_resent_to_another_relay_is_stored_once()
    {
        var node = "claims-" + Guid.NewGuid().ToString("N")[..8];
        await using var relays = await RelayPair.StartAsync(ch, _dir);

        // Relay 1 takes batch b into its block (its flush is 15 s away), then the sensor's stream ends.
        var batch = Batch(node, 2001, 0);
        using (var stream = new CancellationTokenSource(Timeout))
        {
            await using var call = await relays.First.Client.DuplexAsync<EventBatch, IngestAck>(RelayMethods.Push, IngestAck.Parser, stream.Token);
            await call.WriteAsync(batch, stream.Token);
            await relays.First.WaitUntilTakenAsync(node, batch.Events.Count);
            await stream.CancelAsync();
        }

        await relays.First.WaitForAsync(s => s.Nodes.Any(n => n.Node == node && !n.Connected), "relay 1 saw the stream end");

        // The sensor re-sends it to relay 2 at once: no record yet, so relay 2 claims it and stores it.
        var resent = Batch(node, 2001, 0);
        resent.Resent = true;
        (await PushAsync(relays.Second.Client, resent)).Should().Be(2001UL, "relay 2 acks once ClickHouse holds it");

        // A later batch on a new stream to relay 1 joins the same block; its ack says the block was inserted.
        (await PushAsync(relays.First.Client, Batch(node, 2002, 100))).Should().Be(2002UL);

        (await RowsPerBatchAsync(node)).Should().Equal([$"2001\t{batch.Events.Count}", $"2002\t{batch.Events.Count}"],
            "the re-sent batch is stored once, by relay 2\n" + relays.First.Process.Tail(30));
        var first = await relays.First.MetricsAsync();
        first["flowsec_relay_batches_abandoned_total"].Should().Be(1, "relay 1 left the claimed batch out");
        first["flowsec_relay_events_abandoned_total"].Should().Be(batch.Events.Count);
        first["flowsec_relay_events_stored_total"].Should().Be(batch.Events.Count, "relay 1 stored only the later batch");
        var second = await relays.Second.MetricsAsync();
        second["flowsec_relay_events_stored_total"].Should().Be(batch.Events.Count);
        second["flowsec_relay_duplicate_batches_skipped_total"].Should().Be(0);
        second["flowsec_relay_batches_abandoned_total"].Should().Be(0);
    }

    [Fact]
    public async Task A_batch_of_a_half_open_stream_resent_to_another_relay_is_stored_once_and_the_silent_stream_is_ended()
    {
        var node = "half-open-" + Guid.NewGuid().ToString("N")[..8];
        await using var relays = await RelayPair.StartAsync(ch, _dir);
        using var open = new CancellationTokenSource(Timeout);
        await using var call = await relays.First.Client.DuplexAsync<EventBatch, IngestAck>(RelayMethods.Push, IngestAck.Parser, open.Token);
        var batch = Batch(node, 3001, 0);
        await call.WriteAsync(batch, open.Token);
        await relays.First.WaitUntilTakenAsync(node, batch.Events.Count);

        // The stream to relay 1 stays open and says nothing more (a connection relay 1 cannot tell
        // is dead); the sensor has moved on and re-sends the batch to relay 2.
        var resent = Batch(node, 3001, 0);
        resent.Resent = true;
        (await PushAsync(relays.Second.Client, resent)).Should().Be(3001UL);

        // At its flush relay 1 leaves the batch out and, since it will never ack it, ends the stream.
        var ended = async () => await call.ReadAsync(open.Token);
        await ended.Should().ThrowAsync<Exception>("relay 1 ends a stream whose batch it will not ack");
        open.IsCancellationRequested.Should().BeFalse("the stream ended before the test's timeout");

        (await RowsPerBatchAsync(node)).Should().Equal([$"3001\t{batch.Events.Count}"], "stored once, by relay 2\n" + relays.First.Process.Tail(30));
        var first = await relays.First.MetricsAsync();
        first["flowsec_relay_batches_abandoned_total"].Should().Be(1);
        first["flowsec_relay_events_stored_total"].Should().Be(0);
        (await relays.Second.MetricsAsync())["flowsec_relay_events_stored_total"].Should().Be(batch.Events.Count);
    }

    [Fact]
    public async Task A_fresh_batch_behind_a_resent_one_that_waits_the_claim_margin_is_stored_and_acked_first()
    {
        // Batch 4001 is recorded inserting by a relay that died before storing it: the relay that
        // gets the re-sent copy waits the claim margin (20 s here) before it looks for the rows again.
        var node = "margin-" + Guid.NewGuid().ToString("N")[..8];
        var tokenFile = Path.Combine(_dir, "token");
        await using var relay = TestRelay.Start("relay-margin", ch, _dir, tokenFile, TokenFile.ReadOrCreate(tokenFile), "--ClickHouse:ClaimMargin=00:00:20");
        await relay.WaitForAsync(s => s.StorageOk, "relay with storage");
        (await PushAsync(relay.Client, Batch(node, 4000, 200))).Should().Be(4000UL, "stored, so the schema is in place");
        await ch.Client.ExecuteAsync($"INSERT INTO flowsec.stored_batches (node, batch_id, state, events, time) VALUES ('{node}', 4001, 'inserting', 20, now())");

        using var timeout = new CancellationTokenSource(Timeout);
        await using var call = await relay.Client.DuplexAsync<EventBatch, IngestAck>(RelayMethods.Push, IngestAck.Parser, timeout.Token);
        var resent = Batch(node, 4001, 0);
        resent.Resent = true;
        await call.WriteAsync(resent, timeout.Token);
        await call.WriteAsync(Batch(node, 4002, 100), timeout.Token);
        call.CompleteRequests();

        // The fresh batch does not wait for the re-sent one's look-up: a sensor's window keeps moving.
        var acks = new List<ulong>();
        while (await call.ReadAsync(timeout.Token) is { } ack)
        {
            acks.Add(ack.BatchId);
        }

        acks.Should().Equal([4002UL, 4001UL], "the fresh batch is acked while the re-sent one still waits\n" + relay.Process.Tail(20));
        (await RowsPerBatchAsync(node)).Should().Equal(["4000\t20", "4001\t20", "4002\t20"], "no rows were found after the margin, so the re-sent batch is stored, once");
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private async Task<string[]> RowsPerBatchAsync(string node) =>
        (await ch.RunClientAsync($"SELECT batch_id, count() FROM flowsec.flows WHERE node = '{node}' GROUP BY batch_id ORDER BY batch_id FORMAT TabSeparated"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries);

    private static EventBatch Batch(string node, ulong id, int first) => IngestPush.Flows(node, id, first);

    private static Task<ulong> PushAsync(GrpcClient client, EventBatch batch) => IngestPush.PushAsync(client, batch, Timeout);

    /// <summary>Relay 1 (flushes 15 s after its first row, so a batch waits in its block) and relay 2 (defaults), on one ClickHouse.</summary>
    private sealed class RelayPair : IAsyncDisposable
    {
        private RelayPair(TestRelay first, TestRelay second) => (First, Second) = (first, second);

        public TestRelay First { get; }

        public TestRelay Second { get; }

        public static async Task<RelayPair> StartAsync(ClickHouseServer ch, string dir)
        {
            var tokenFile = Path.Combine(dir, "token");
            var token = TokenFile.ReadOrCreate(tokenFile);
            var first = TestRelay.Start("relay-1", ch, dir, tokenFile, token, "--ClickHouse:FlushInterval=00:00:15");
            var second = TestRelay.Start("relay-2", ch, dir, tokenFile, token);
            await first.WaitForAsync(s => s.StorageOk, "relay 1 with storage");
            await second.WaitForAsync(s => s.StorageOk, "relay 2 with storage");
            return new RelayPair(first, second);
        }

        public async ValueTask DisposeAsync()
        {
            await First.DisposeAsync();
            await Second.DisposeAsync();
        }
    }

    private sealed class TestRelay : IAsyncDisposable
    {
        private readonly int _uiPort;

        private TestRelay(ChildProcess process, GrpcClient client, int uiPort) => (Process, Client, _uiPort) = (process, client, uiPort);

        public ChildProcess Process { get; }

        public GrpcClient Client { get; }

        public static TestRelay Start(string name, ClickHouseServer ch, string dir, string tokenFile, string token, params string[] settings)
        {
            int grpc = FlowSecStack.FreePort(), ui = FlowSecStack.FreePort();
            var process = FlowSecStack.StartRelay(name, grpc, ui, tokenFile, ch.Server.Url, dir, settings);
            return new TestRelay(process, new GrpcClient(new Uri($"http://127.0.0.1:{grpc}"), token), ui);
        }

        public Task WaitForAsync(Func<StatusResponse, bool> ready, string what) =>
            FlowSecStack.WaitForStatusAsync(
                () => Client.UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser, CancellationToken.None, TimeSpan.FromSeconds(5)),
                ready, Process, what);

        // Received, and out of the storage queue: the writer holds it in its block.
        public async Task WaitUntilTakenAsync(string node, int events)
        {
            await WaitForAsync(s => s.Nodes.Any(n => n.Node == node && n.EventsReceived == (ulong)events), "the batch received");
            await Eventually.HoldsAsync(async () => (await MetricsAsync())["flowsec_relay_storage_queue_events"] == 0, Timeout, () => "the writer took the batch");
        }

        public async Task<Dictionary<string, long>> MetricsAsync()
        {
            using var http = new HttpClient();
            var text = await http.GetStringAsync(new Uri($"http://127.0.0.1:{_uiPort}/metrics"));
            return text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith('#')).Select(l => l.Split(' '))
                .ToDictionary(f => f[0], f => long.Parse(f[1], CultureInfo.InvariantCulture));
        }

        public async ValueTask DisposeAsync()
        {
            Client.Dispose();
            await Process.DisposeAsync();
        }
    }
}
