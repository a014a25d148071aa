using FlowSec.Api.V1;
using FlowSec.Cli.Up;
using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>ClickHouse going away and coming back: data survives a restart, and the writer holds its batch until the server returns.</summary>
public sealed class ClickHouseRestartTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly string _dir = Directory.CreateTempSubdirectory("flowsec-ch-restart-").FullName;

    [Fact]
    public async Task A_restart_on_the_same_directory_keeps_the_data()
    {
        var db = ClickHouseServer.NewDatabase();
        var flows = TestFlows.Flows(300);
        var first = await ManagedClickHouse.StartAsync(_dir, ClickHouseServer.FreePort(), ClickHouseServer.FreePort(), CancellationToken.None);
        var firstPid = first.ProcessId;
        await using (first)
        {
            await using var relay = await FlowStorageTests.StartAsync(first.Url, db);
            var batch = new EventBatch();
            batch.Events.AddRange(flows);
            await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
            await Eventually.HoldsAsync(() => relay.Writer.EventsStored == flows.Count, Timeout, () => $"stored {relay.Writer.EventsStored}");
        }

        File.Exists($"/proc/{firstPid}/status").Should().BeFalse("stopping FlowSec's ClickHouse stops the process");

        // New ports on purpose: the config is rewritten on every start, the data stays.
        await using var second = await ManagedClickHouse.StartAsync(_dir, ClickHouseServer.FreePort(), ClickHouseServer.FreePort(), CancellationToken.None);
        (await ClickHouseServer.RunClientAsync(second.TcpPort, $"SELECT count() FROM {db}.flows")).Trim().Should().Be("300");
        using var client = new ClickHouseHttpClient(new ClickHouseOptions { Url = second.Url, Database = db });
        var read = await new ClickHouseEventStore(client, new ClickHouseOptions { Url = second.Url, Database = db })
            .QueryFlowsAsync(new EventQuery(), CancellationToken.None);
        read.Should().Equal(flows);
    }

    [Fact]
    public async Task The_writer_holds_its_batch_while_ClickHouse_is_down_and_ingest_waits_instead_of_losing_events()
    {
        var db = ClickHouseServer.NewDatabase();
        int httpPort = ClickHouseServer.FreePort(), tcpPort = ClickHouseServer.FreePort();
        var batches = TestFlows.Flows(80).Chunk(10).Select(c => { var b = new EventBatch(); b.Events.AddRange(c); return b; }).ToList();
        await using var relay = await FlowStorageTests.StartAsync($"http://127.0.0.1:{httpPort}", db, queueBatches: 2);

        // Down at start: the schema cannot be created, the writer reads nothing, the bounded queue
        // (2 batches) fills and the third publish waits.
        var blocked = PublishAsync(relay, batches[..4]);
        await Eventually.HoldsAsync(() => relay.Writer.InsertErrors >= 2, Timeout, () => "no failed attempts");
        relay.Writer.LastError.Should().Contain("unreachable");
        blocked.IsCompleted.Should().BeFalse("a full storage queue pushes back on ingest");

        var server = await ManagedClickHouse.StartAsync(_dir, httpPort, tcpPort, CancellationToken.None);
        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == 40, Timeout,
            () => $"stored {relay.Writer.EventsStored}/40, last error {relay.Writer.LastError}");
        await blocked.WaitAsync(Timeout);
        relay.Writer.LastError.Should().BeNull();

        // Down while running: the batch read from the queue fails to insert and is held until the server is back.
        await server.DisposeAsync();
        var errorsBefore = relay.Writer.InsertErrors;
        await PublishAsync(relay, batches[4..]).WaitAsync(Timeout);
        await Eventually.HoldsAsync(() => relay.Writer.InsertErrors > errorsBefore, Timeout, () => "no failed insert");
        relay.Writer.EventsStored.Should().Be(40);

        await using var restarted = await ManagedClickHouse.StartAsync(_dir, httpPort, tcpPort, CancellationToken.None);
        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == 80, Timeout,
            () => $"stored {relay.Writer.EventsStored}/80, last error {relay.Writer.LastError}");
        (await ClickHouseServer.RunClientAsync(tcpPort, $"SELECT count(), uniqExact(time_ns) FROM {db}.flows")).Trim().Should().Be("80\t80");
    }

    [Fact]
    public async Task While_an_insert_is_retried_the_writer_fills_the_next_batch_then_pushes_back_and_stores_both_once()
    {
        var db = ClickHouseServer.NewDatabase();
        int httpPort = ClickHouseServer.FreePort(), tcpPort = ClickHouseServer.FreePort();
        var batches = TestFlows.Flows(40).Chunk(10).Select(c => { var b = new EventBatch(); b.Events.AddRange(c); return b; }).ToList();
        var server = await ManagedClickHouse.StartAsync(_dir, httpPort, tcpPort, CancellationToken.None);
        await using var relay = await FlowStorageTests.StartAsync(server.Url, db, batchMaxRows: 10, queueBatches: 1);
        await Eventually.HoldsAsync(() => relay.Writer.SchemaReady, Timeout, () => $"no schema: {relay.Writer.LastError}");
        await server.DisposeAsync();

        // The first batch fills a set by itself: its insert fails and is retried.
        var first = await relay.Pipeline.PublishAsync(batches[0], CancellationToken.None);
        await Eventually.HoldsAsync(() => relay.Writer.InsertErrors >= 1, Timeout, () => "no failed insert");

        // Meanwhile the writer takes the second batch from the queue into the next set...
        var second = await relay.Pipeline.PublishAsync(batches[1], CancellationToken.None);
        await Eventually.HoldsAsync(() => relay.Pipeline.StorageQueue.Count == 0, Timeout, () => "the writer did not take the batch after the one being inserted");

        // ...and no more: the third stays queued (one batch fits) and the fourth waits (backpressure).
        var third = await relay.Pipeline.PublishAsync(batches[2], CancellationToken.None);
        var fourth = relay.Pipeline.PublishAsync(batches[3], CancellationToken.None).AsTask();
        var errors = relay.Writer.InsertErrors;
        await Eventually.HoldsAsync(() => relay.Writer.InsertErrors > errors, Timeout, () => "the insert is not retried");
        fourth.IsCompleted.Should().BeFalse("two sets held, one batch queued: ingest waits");
        relay.Pipeline.StorageQueue.Count.Should().Be(1);
        first.IsCompleted.Should().BeFalse("nothing is acked before ClickHouse holds it");
        second.IsCompleted.Should().BeFalse();

        await using var restarted = await ManagedClickHouse.StartAsync(_dir, httpPort, tcpPort, CancellationToken.None);
        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == 40, Timeout,
            () => $"stored {relay.Writer.EventsStored}/40, last error {relay.Writer.LastError}");
        await Task.WhenAll(first, second, third, await fourth).WaitAsync(Timeout);
        (await ClickHouseServer.RunClientAsync(tcpPort, $"SELECT count(), uniqExact(time_ns) FROM {db}.flows")).Trim().Should().Be("40\t40");
    }

    private static Task PublishAsync(StorageHost relay, IEnumerable<EventBatch> batches) => Task.Run(async () =>
    {
        foreach (var batch in batches)
        {
            await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
        }
    });

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
