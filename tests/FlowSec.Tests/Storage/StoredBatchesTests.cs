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

    [Theory]
    [InlineData("Native")]
    [InlineData("RowBinary")]
    public async Task A_batch_another_relay_claimed_is_left_out_of_the_insert_unacked_and_one_this_relay_claimed_last_is_stored(string format)
    {
        var db = ClickHouseServer.NewDatabase();
        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, db, flushInterval: "00:00:02",
            settings: new Dictionary<string, string?> { ["InsertFormat"] = format });
        await relay.Pipeline.PublishAsync(Batch("n1", 1, TestFlows.Flows(3)), CancellationToken.None); // creates the schema
        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == 3, Timeout, () => $"stored {relay.Writer.EventsStored}");

        // Batch 11: re-sent to another relay, which claimed it. Batch 13: claimed by another relay,
        // then re-sent here again and claimed by this relay last.
        var other = new StoredBatches(ch.Client, ch.Options(db), NullLogger<StoredBatches>.Instance);
        await other.ClaimAsync("n1", 11, CancellationToken.None);
        await other.ClaimAsync("n1", 13, CancellationToken.None);
        await relay.Ledger.ClaimAsync("n1", 13, CancellationToken.None);

        var batches = new ulong[] { 10, 11, 12, 13 }.Select(id => Batch("n1", id, TestEvents.Mixed(12).Select(e => { e.TimeUnixNano += id; return e; }))).ToList();
        var acks = new List<Task>();
        foreach (var batch in batches)
        {
            acks.Add(await relay.Pipeline.PublishAsync(batch, CancellationToken.None));
        }

        await Task.WhenAll(acks.Select(a => a.ContinueWith(_ => { }, TaskScheduler.Default))).WaitAsync(Timeout);
        acks.Select(a => a.Status).Should().Equal(TaskStatus.RanToCompletion, TaskStatus.Canceled, TaskStatus.RanToCompletion, TaskStatus.RanToCompletion);
        relay.Writer.BatchesAbandoned.Should().Be(1);
        relay.Writer.EventsAbandoned.Should().Be(batches[1].Events.Count);
        relay.Writer.EventsStored.Should().Be(3 + 3 * batches[0].Events.Count);
        foreach (var table in EventTables.All)
        {
            var expected = new ulong[] { 10, 12, 13 }.Select(id => (id, batches[(int)id - 10].Events.Count(e => EventTables.For(e.Type) == table)))
                .Where(x => x.Item2 > 0).Select(x => $"{x.id}\t{x.Item2}");
            (await ch.RunClientAsync($"SELECT batch_id, count() FROM {db}.{table.Name} WHERE batch_id >= 10 GROUP BY batch_id ORDER BY batch_id FORMAT TabSeparated"))
                .Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal(expected, $"table {table.Name}: every row of batch 11 left out, the rest intact");
        }

        (await ch.RunClientAsync($"SELECT state FROM {db}.stored_batches WHERE batch_id = 11 FORMAT TabSeparated")).Trim()
            .Should().Be("inserting", "never recorded as stored here: the claimant finds no rows and stores it");
    }

    [Fact]
    public async Task Claims_made_together_go_to_clickhouse_in_one_insert()
    {
        // A spool replay re-sends batches by the thousand: one part per claim would swamp the table's merges.
        var db = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync();
        var ledger = new StoredBatches(ch.Client, ch.Options(db), NullLogger<StoredBatches>.Instance);
        await Task.WhenAll(Enumerable.Range(1, 20).Select(i => ledger.ClaimAsync("n1", (ulong)i, CancellationToken.None))).WaitAsync(Timeout);

        (await ch.RunClientAsync($"SELECT count(), uniqExact(batch_id) FROM {db}.claimed_batches FORMAT TabSeparated")).Trim().Should().Be("20\t20");
        (await ch.RunClientAsync($"SELECT count() FROM system.parts WHERE database = '{db}' AND table = 'claimed_batches' AND level = 0 FORMAT TabSeparated"))
            .Trim().Should().Be("1", "one insert (a part of level 0 each, kept a while after merges)");
    }

    [Fact]
    public void The_latest_claim_decides_and_a_fresh_copy_yields_to_any_claim()
    {
        StoredBatches.Claim[] claims =
        [
            new("n", 1, "other", 100), // fresh here, claimed elsewhere
            new("n", 2, "other", 100), new("n", 2, "me", 200), // re-sent here last
            new("n", 3, "me", 100), new("n", 3, "other", 200), // re-sent here, then elsewhere
            new("n", 4, "me", 100), new("n", 4, "zz", 100), // same time: the relay id decides, both relays agree
            new("m", 2, "other", 50), // another node's batch 2
        ];
        StoredBatches.ClaimedElsewhere(claims, "me").Should().BeEquivalentTo(new[] { ("n", 1UL), ("n", 3UL), ("n", 4UL), ("m", 2UL) });
        StoredBatches.ClaimedElsewhere(claims, "zz").Should().BeEquivalentTo(new[] { ("n", 1UL), ("n", 2UL), ("n", 3UL), ("m", 2UL) });
    }

    [Fact]
    public async Task A_claim_finding_another_relays_inserting_record_without_rows_waits_the_margin_before_looking_again()
    {
        var db = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync();
        var time = new ManualTime();
        var options = ch.Options(db);
        options.ClaimMargin = TimeSpan.FromSeconds(5);
        var ledger = new StoredBatches(ch.Client, options, NullLogger<StoredBatches>.Instance, time);

        // No record: never sent, no wait.
        (await ledger.TablesHoldingAsync(Batch("n1", 20, TestFlows.Flows(4)), CancellationToken.None).WaitAsync(Timeout)).Should().BeEmpty();
        time.PendingTimers.Should().Be(0);

        // Recorded inserting by another relay, no rows: it may be between its look at the claims and its insert.
        await new StoredBatches(ch.Client, ch.Options(db), NullLogger<StoredBatches>.Instance).RecordAsync([("n1", 21, 4)], "inserting", CancellationToken.None);
        var lookup = ledger.TablesHoldingAsync(Batch("n1", 21, TestFlows.Flows(4)), CancellationToken.None);
        await Eventually.HoldsAsync(() => time.PendingTimers == 1 || lookup.IsCompleted, Timeout, () => "the look-up waits on the clock");
        lookup.IsCompleted.Should().BeFalse("the margin has not passed on the clock");
        (await ch.RunClientAsync($"SELECT relay FROM {db}.claimed_batches WHERE node = 'n1' AND batch_id = 21 FORMAT TabSeparated")).Trim()
            .Should().Be(ledger.InstanceId, "the claim is written before the ledger is read");
        time.Advance(TimeSpan.FromSeconds(5));
        (await lookup.WaitAsync(Timeout)).Should().BeEmpty("no rows after the margin either: the batch is stored here");
    }

    /// <summary>A clock that moves only when told, with the timers Task.Delay sets on it.</summary>
    private sealed class ManualTime : TimeProvider
    {
        private readonly List<Timer> _timers = [];
        private long _ticks = 1_000_000;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public int PendingTimers
        {
            get
            {
                lock (_timers)
                {
                    return _timers.Count(t => t.Due is not null);
                }
            }
        }

        public override long GetTimestamp() => Interlocked.Read(ref _ticks);

        public override DateTimeOffset GetUtcNow() => DateTimeOffset.UnixEpoch.AddTicks(GetTimestamp());

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = new Timer(this, callback, state);
            lock (_timers)
            {
                _timers.Add(timer);
            }

            timer.Change(dueTime, period);
            return timer;
        }

        public void Advance(TimeSpan by)
        {
            var now = Interlocked.Add(ref _ticks, by.Ticks);
            List<Timer> due;
            lock (_timers)
            {
                due = _timers.Where(t => t.Due <= now).ToList();
                due.ForEach(t => t.Due = null);
            }

            due.ForEach(t => t.Fire());
        }

        private sealed class Timer(ManualTime time, TimerCallback callback, object? state) : ITimer
        {
            public long? Due { get; set; }

            public bool Change(TimeSpan dueTime, TimeSpan period)
            {
                lock (time._timers)
                {
                    Due = dueTime == global::System.Threading.Timeout.InfiniteTimeSpan ? null : time.GetTimestamp() + dueTime.Ticks;
                }

                return true;
            }

            public void Fire() => callback(state);

            public void Dispose()
            {
                lock (time._timers)
                {
                    Due = null;
                    time._timers.Remove(this);
                }
            }

            public ValueTask DisposeAsync()
            {
                Dispose();
                return ValueTask.CompletedTask;
            }
        }
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
