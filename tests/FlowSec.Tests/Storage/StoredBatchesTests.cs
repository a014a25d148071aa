using FlowSec.Api.V1;
using FlowSec.Relay.Storage;
using FlowSec.Tests.Integration;
using Microsoft.Extensions.Logging.Abstractions;

namespace FlowSec.Tests.Storage;

/// <summary>
/// What ClickHouse says about stored batches: every row carries its batch id, outcomes go to
/// <c>stored_batches</c>, and an insert whose answer was lost is looked up instead of sent twice.
/// </summary>
public sealed class StoredBatchesTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_stored_batch_is_found_by_the_ledger_and_by_its_rows_and_an_unknown_one_is_not()
    {
        var db = ClickHouseServer.NewDatabase();
        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, db);
        var stored = Batch("n1", 7, TestEvents.Mixed(12));
        await relay.Pipeline.PublishAsync(stored, CancellationToken.None);
        var count = stored.Events.Count;
        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == count, Timeout, () => $"stored {relay.Writer.EventsStored}");
        (await ch.RunClientAsync($"SELECT node, batch_id, state, events FROM {db}.stored_batches ORDER BY state FORMAT TabSeparated"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal($"n1\t7\tstored\t{count}", $"n1\t7\tinserting\t{count}");

        var ledger = new StoredBatches(ch.Client, ch.Options(db), NullLogger<StoredBatches>.Instance);
        var tables = stored.Events.Select(e => EventTables.For(e.Type)!.Name).Distinct().Order().ToArray();
        (await ledger.TablesHoldingAsync(stored, CancellationToken.None)).Select(t => t.Name).Order().Should().Equal(tables);
        (await ledger.TablesHoldingAsync(Batch("n1", 8, TestEvents.Mixed(12)), CancellationToken.None)).Should().BeEmpty("batch 8 was never stored");
        (await ledger.TablesHoldingAsync(Batch("n2", 7, TestEvents.Mixed(12)), CancellationToken.None)).Should().BeEmpty("batch ids are per node");

        // A relay that died between the insert and the record: the rows' batch_id still tells.
        await ch.Client.ExecuteAsync($"DROP TABLE {db}.stored_batches");
        await ch.Client.ExecuteAsync(StoredBatches.CreateSql(db));
        (await ledger.TablesHoldingAsync(stored, CancellationToken.None)).Should().BeEmpty("without an inserting record the batch was never sent");
        await ledger.RecordAsync([("n1", 7, count)], "inserting", CancellationToken.None);
        (await ledger.TablesHoldingAsync(stored, CancellationToken.None)).Select(t => t.Name).Order().Should().Equal(tables);
    }

    [Fact]
    public async Task An_insert_whose_answer_is_lost_is_looked_up_and_not_stored_twice()
    {
        var db = ClickHouseServer.NewDatabase();
        await using var proxy = new InsertHoldingProxy(ch.Server.HttpPort);
        await using var relay = await FlowStorageTests.StartAsync(proxy.Url, db);
        var warmUp = Batch("n1", 1, TestFlows.Flows(5));
        await relay.Pipeline.PublishAsync(warmUp, CancellationToken.None); // creates the schema, so the next insert is ours
        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == 5, Timeout, () => $"stored {relay.Writer.EventsStored}");

        var held = proxy.HoldNextInsert($"{db}.flows");
        var batch = Batch("n1", 2, TestFlows.Flows(50).Select(f => { f.TimeUnixNano += 1_000_000_000; return f; }));
        var acked = await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
        await held.WaitAsync(Timeout);
        acked.IsCompleted.Should().BeFalse("the writer has not heard back");
        proxy.CutHeld();

        await acked.WaitAsync(Timeout);
        relay.Writer.UnknownInsertsFoundStored.Should().Be(1);
        relay.Writer.InsertErrors.Should().BeGreaterThan(0);
        relay.Writer.EventsStored.Should().Be(55);
        (await ch.RunClientAsync($"SELECT batch_id, count() FROM {db}.flows GROUP BY batch_id ORDER BY batch_id FORMAT TabSeparated"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal("1\t5", "2\t50");
    }

    private static EventBatch Batch(string node, ulong id, IEnumerable<Event> events)
    {
        var batch = new EventBatch { Node = node, BatchId = id };
        foreach (var e in events)
        {
            e.Node = node;
            batch.Events.Add(e);
        }

        return batch;
    }
}
