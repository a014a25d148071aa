using System.Diagnostics;
using FlowSec.Api.V1;
using FlowSec.Relay.Pipeline;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FlowSec.Relay.Storage;

/// <summary>
/// Drains <see cref="EventPipeline.StorageQueue"/> into the event tables (<c>flows</c>, <c>dns</c>,
/// <c>process_events</c>, <c>file_events</c>, <c>alerts</c>): each event is encoded into its table's
/// batch (a columnar <see cref="NativeBlock"/>, or RowBinary, see <see cref="ClickHouseOptions.InsertFormat"/>); all pending batches are sent (one INSERT per table) when one holds
/// <see cref="ClickHouseOptions.BatchMaxRows"/> rows, when together they hold
/// <see cref="ClickHouseOptions.BatchMaxBytes"/>, or when the oldest row is
/// <see cref="ClickHouseOptions.FlushInterval"/> old; the next batches fill meanwhile (at most one
/// set being inserted, one filling). A failed insert is retried with backoff,
/// holding the batches (a table already inserted is not sent again); once the next set is full too,
/// nothing more is read from the bounded queue, so ingest waits (backpressure) instead of losing events. Every row carries
/// its sensor batch id; an insert whose outcome is unknown (the connection broke, the server died
/// after reading it) is looked up by those ids before it is sent again, so it is never stored
/// twice. Each flush records its batches in <c>stored_batches</c> as inserting before the first row
/// is sent, and as stored after the last. Batches ingest withdrew from the queue before the writer
/// took them (their stream ended unacked, see <see cref="EventPipeline.Withdraw"/>) are skipped by
/// the queue's reader, never appended here. Before every insert attempt the writer reads the
/// claims other relays made on its batches (re-sent copies they received) and takes those batches'
/// rows out unacked, so a batch the sensor gave up on here is stored by the relay it went to
/// instead of by both (see <see cref="StoredBatches"/>).
/// </summary>
/// <remarks>Named for its first table; it stores every event type a table exists for.</remarks>
public sealed class ClickHouseFlowWriter : BackgroundService
{
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan ShutdownFlushTimeout = TimeSpan.FromSeconds(5);

    private readonly EventPipeline _pipeline;
    private readonly ClickHouseHttpClient _client;
    private readonly ClickHouseSchema _schema;
    private readonly StoredBatches _ledger;
    private readonly ClickHouseOptions _options;
    private readonly ILogger<ClickHouseFlowWriter> _log;
    private readonly Generation[] _generations;
    private long _stored;
    private long _inserts;
    private long _insertErrors;
    private long _notStored;
    private long _dropped;
    private long _unknownFoundStored;
    private long _abandonedBatches;
    private long _abandonedEvents;
    private volatile string? _lastError;
    private volatile bool _schemaReady;

    /// <summary>Creates the writer; it starts consuming when the host starts it.</summary>
    public ClickHouseFlowWriter(EventPipeline pipeline, ClickHouseHttpClient client, ClickHouseSchema schema, StoredBatches ledger,
        ClickHouseOptions options, ILogger<ClickHouseFlowWriter> log)
    {
        if (options.BatchMaxRows <= 0 || options.BatchMaxBytes <= 0 || options.FlushInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException("ClickHouse:BatchMaxRows, ClickHouse:BatchMaxBytes and ClickHouse:FlushInterval must be positive.", nameof(options));
        }

        _pipeline = pipeline;
        _client = client;
        _schema = schema;
        _ledger = ledger;
        _options = options;
        _log = log;
        var database = SqlLiteral.Identifier(options.Database);
        _generations = [new Generation(database, options), new Generation(database, options)];
    }

    /// <summary>Events inserted into ClickHouse, all tables together.</summary>
    public long EventsStored => Interlocked.Read(ref _stored);

    /// <summary>Successful INSERT statements (batches).</summary>
    public long Inserts => Interlocked.Read(ref _inserts);

    /// <summary>Failed insert (or schema) attempts; each is retried.</summary>
    public long InsertErrors => Interlocked.Read(ref _insertErrors);

    /// <summary>Events of a type no table exists for (unspecified, or newer than this relay); counted, not stored.</summary>
    public long EventsNotStored => Interlocked.Read(ref _notStored);

    /// <summary>Inserts that failed without an answer but turned out to have gone in, so were not sent again.</summary>
    public long UnknownInsertsFoundStored => Interlocked.Read(ref _unknownFoundStored);

    /// <summary>
    /// Batches taken out of a block before an insert attempt because another relay claimed a re-sent
    /// copy of them (the sensor gave up on this relay's ack); not acked here, stored there.
    /// </summary>
    public long BatchesAbandoned => Interlocked.Read(ref _abandonedBatches);

    /// <summary>Events of <see cref="BatchesAbandoned"/>.</summary>
    public long EventsAbandoned => Interlocked.Read(ref _abandonedEvents);

    /// <summary>Events lost because the relay stopped while ClickHouse was refusing them.</summary>
    public long EventsDropped => Interlocked.Read(ref _dropped);

    /// <summary>The last ClickHouse error, or null after a successful insert.</summary>
    public string? LastError => _lastError;

    /// <summary>True once the schema has been created or found.</summary>
    public bool SchemaReady => _schemaReady;

    /// <inheritdoc />
    /// <remarks>
    /// Two generations of batches take turns: while one is being inserted (and retried), the other
    /// takes rows from the queue, so encoding overlaps the server's insert. A full generation
    /// waits for the insert before it is sent: inserts stay one at a time and in order, and the
    /// writer holds at most two generations of rows.
    /// </remarks>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var queue = _pipeline.StorageQueue;
        var (filling, inserting) = (_generations[0], Task.CompletedTask);
        try
        {
            await RetryAsync(EnsureSchemaAsync, () => 0, stoppingToken);
            var firstRowAt = 0L;
            while (true)
            {
                while (!filling.Full && queue.TryRead(out var item))
                {
                    if (filling.RowCount == 0)
                    {
                        firstRowAt = Stopwatch.GetTimestamp();
                    }

                    Append(filling, item);
                    filling.AwaitingFlush.Add((item.Batch.Node, item.Batch.BatchId, item.Stored));
                    if (filling.RowCount == 0)
                    {
                        filling.CompleteAwaiting(); // nothing to insert (a heartbeat): held already
                    }
                }

                var waited = Stopwatch.GetElapsedTime(firstRowAt);
                if (filling.Full || (filling.RowCount > 0 && waited >= _options.FlushInterval))
                {
                    await inserting;
                    var sent = filling;
                    inserting = RetryAsync(ct => FlushAsync(sent, ct), () => sent.RowCount, stoppingToken);
                    filling = OtherThan(sent);
                    continue;
                }

                if (!await WaitForDataAsync(queue, filling.RowCount > 0 ? _options.FlushInterval - waited : Timeout.InfiniteTimeSpan, stoppingToken))
                {
                    break; // the pipeline completed: store what is left and stop
                }
            }

            await inserting;
            await RetryAsync(ct => FlushAsync(filling, ct), () => filling.RowCount, stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            try
            {
                await inserting; // ends at once: it retries on the same token
            }
            catch (OperationCanceledException)
            {
            }

            await FlushOnShutdownAsync(queue, OtherThan(filling), filling);
        }
    }

    private Generation OtherThan(Generation generation) => ReferenceEquals(generation, _generations[0]) ? _generations[1] : _generations[0];

    private void Append(Generation generation, StorageItem item)
    {
        // A batch can overshoot the limits by its own size; sensors send batches far smaller than them.
        var batch = item.Batch;
        var rows = item.Rows is { } decoded ? AppendDecoded(generation, batch, decoded) : 0;
        foreach (var e in batch.Events)
        {
            if (!generation.ByType.TryGetValue(e.Type, out var pending))
            {
                Interlocked.Increment(ref _notStored);
                continue;
            }

            var before = pending.Bytes;
            pending.Append(e, batch);
            rows++;
            Account(generation, pending, before, 1);
        }

        if (rows > 0 && batch.BatchId != 0)
        {
            generation.FlushBatches.Add((batch.Node, batch.BatchId, rows));
        }
    }

    // Rows decoded at ingest: copied column by column into the table's block, the per-batch block reused.
    private int AppendDecoded(Generation generation, EventBatch batch, NativeBlock decoded)
    {
        var rows = decoded.Rows;
        if (rows > 0)
        {
            var pending = generation.Batches.First(b => ReferenceEquals(b.Table, decoded.Table));
            var before = pending.Bytes;
            pending.AppendBlock(decoded, batch);
            Account(generation, pending, before, rows);
        }

        NativeBlockPool.Return(decoded);
        return rows;
    }

    // The generation's size after rows were appended to one table's block, and whether it is due.
    private void Account(Generation generation, PendingBatch pending, long bytesBefore, int rows)
    {
        generation.RowCount += rows;
        generation.ByteCount += pending.Bytes - bytesBefore;
        generation.Full |= pending.Count >= _options.BatchMaxRows || generation.ByteCount >= _options.BatchMaxBytes;
    }

    private static async Task<bool> WaitForDataAsync(System.Threading.Channels.ChannelReader<StorageItem> queue, TimeSpan timeout, CancellationToken stoppingToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            cts.CancelAfter(timeout);
        }

        try
        {
            return await queue.WaitToReadAsync(cts.Token);
        }
        catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested)
        {
            return true; // flush deadline reached
        }
    }

    private async Task EnsureSchemaAsync(CancellationToken ct)
    {
        if (!_schemaReady)
        {
            await _schema.EnsureAsync(ct);
            _schemaReady = true;
        }
    }

    private async Task FlushAsync(Generation generation, CancellationToken ct)
    {
        if (generation.RowCount == 0)
        {
            return;
        }

        await EnsureSchemaAsync(ct);
        if (!generation.FlushRecorded)
        {
            // Before any row: a re-sent batch without this record was never sent (see StoredBatches).
            await _ledger.RecordAsync(generation.FlushBatches, "inserting", ct);
            generation.FlushRecorded = true;
        }

        // Every attempt, the first and each retry: a claim written before this read is honoured;
        // one written after it finds the inserting record and waits for this insert (see StoredBatches).
        await LeaveOutClaimedAsync(generation, ct);

        foreach (var pending in generation.Batches)
        {
            if (pending.Count == 0)
            {
                continue; // also a table inserted before a later one failed: it must not be sent twice
            }

            if (pending.UnknownOutcomeQueryId is { } earlier && await WentInAsync(pending, earlier, ct))
            {
                Interlocked.Increment(ref _unknownFoundStored);
                _log.LogWarning("An insert of {Rows} rows into {Table} that failed without an answer had gone in; not sending it again", pending.Count, pending.Table.Name);
            }
            else
            {
                var queryId = _ledger.NextInsertQueryId();
                try
                {
                    await pending.InsertAsync(_client, queryId, ct);
                }
                catch (Exception e) when (e is not ClickHouseException { Status: not null })
                {
                    // No answer from the server: the rows may be in. Look before sending them again.
                    pending.UnknownOutcomeQueryId = queryId;
                    throw;
                }
            }

            Interlocked.Add(ref _stored, pending.Count);
            Interlocked.Increment(ref _inserts);
            generation.RowCount -= pending.Count;
            generation.ByteCount -= pending.Bytes;
            pending.Clear();
        }

        generation.Full = false;
        _lastError = null;
        await RecordStoredAsync(generation, ct);
        generation.CompleteAwaiting();
    }

    // Takes out the rows of the batches another relay claimed: their sensor re-sent them there.
    private async Task LeaveOutClaimedAsync(Generation generation, CancellationToken ct)
    {
        if (generation.FlushBatches.Count == 0)
        {
            return;
        }

        var claimed = await _ledger.ClaimedElsewhereAsync(generation.FlushBatches.Select(b => (b.Node, b.BatchId)).ToList(), ct);
        if (claimed.Count == 0)
        {
            return;
        }

        var rows = generation.LeaveOut(claimed);
        Interlocked.Add(ref _abandonedBatches, claimed.Count);
        Interlocked.Add(ref _abandonedEvents, rows);
        _log.LogWarning("{Batches} batches ({Rows} rows) were re-sent to another relay, which claimed them: not storing them here ({Ids})",
            claimed.Count, rows, string.Join(", ", claimed.Select(b => $"{b.Node}/{b.BatchId}")));
    }

    // Whether the insert `queryId` of `pending` went in; only batches with ids can be looked up.
    private async Task<bool> WentInAsync(PendingBatch pending, string queryId, CancellationToken ct)
    {
        if (pending.Batches.Count == 0 || pending.Batches.Any(b => b.BatchId == 0))
        {
            pending.UnknownOutcomeQueryId = null;
            return false;
        }

        var found = await _ledger.RowsOfAsync(pending.Table, pending.Batches, queryId, ct);
        pending.UnknownOutcomeQueryId = null;
        return found >= pending.Count;
    }

    // The record is a shortcut for later look-ups, not the truth (the rows' batch_id is): a failure
    // to write it is logged, and does not hold back the acks.
    private async Task RecordStoredAsync(Generation generation, CancellationToken ct)
    {
        try
        {
            await _ledger.RecordAsync(generation.FlushBatches, "stored", ct);
        }
        catch (Exception e) when (e is ClickHouseException or HttpRequestException)
        {
            _log.LogWarning("Could not record {Batches} stored batches: {Error}", generation.FlushBatches.Count, e.Message);
        }

        generation.FlushBatches.Clear();
        generation.FlushRecorded = false;
    }

    private async Task RetryAsync(Func<CancellationToken, Task> action, Func<int> rowsHeld, CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                await action(ct);
                return;
            }
            catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
            {
                Interlocked.Increment(ref _insertErrors);
                _lastError = e.Message;
                // A table dropped behind our back comes back on the next attempt.
                _schemaReady = _schemaReady && e is not ClickHouseException { Code: 60 or 81 };
                var delay = TimeSpan.FromMilliseconds(Math.Min(MaxBackoff.TotalMilliseconds, 200 * Math.Pow(2, Math.Min(attempt, 10))));
                _log.LogWarning("ClickHouse write failed ({Rows} rows held, attempt {Attempt}), retrying in {Delay}: {Error}", rowsHeld(), attempt + 1, delay, e.Message);
                await Task.Delay(delay, ct);
            }
        }
    }

    // The older generation (whose insert was interrupted) first, then the one filling with what is left in the queue.
    private async Task FlushOnShutdownAsync(System.Threading.Channels.ChannelReader<StorageItem> queue, Generation older, Generation filling)
    {
        while (queue.TryRead(out var item))
        {
            filling.AwaitingFlush.Add((item.Batch.Node, item.Batch.BatchId, item.Stored));
            Append(filling, item);
        }

        using var cts = new CancellationTokenSource(ShutdownFlushTimeout);
        foreach (var generation in new[] { older, filling })
        {
            try
            {
                await FlushAsync(generation, cts.Token);
            }
            catch (Exception e)
            {
                Interlocked.Add(ref _dropped, generation.RowCount);
                _lastError = e.Message;
                _log.LogError("Stopping with {Rows} events not stored: {Error}", generation.RowCount, e.Message);
            }
        }
    }

    /// <summary>
    /// One set of batches, one per table, with the sensor batches they hold and the promises to
    /// keep once they are stored.
    /// </summary>
    private sealed class Generation
    {
        public Generation(string database, ClickHouseOptions options)
        {
            Batches = EventTables.All.Select(t => new PendingBatch(t, database + "." + t.Name, options)).ToArray();
            ByType = Batches.SelectMany(b => b.Table.Types.Select(type => (type, b))).ToDictionary(x => x.type, x => x.b);
        }

        public PendingBatch[] Batches { get; }

        public Dictionary<EventType, PendingBatch> ByType { get; }

        public int RowCount { get; set; }

        public long ByteCount { get; set; }

        /// <summary>A table reached <see cref="ClickHouseOptions.BatchMaxRows"/>, or all together <see cref="ClickHouseOptions.BatchMaxBytes"/>.</summary>
        public bool Full { get; set; }

        /// <summary>The sensor batches with rows here, recorded in <c>stored_batches</c>.</summary>
        public List<(string Node, ulong BatchId, int Events)> FlushBatches { get; } = [];

        /// <summary>Whether <see cref="FlushBatches"/> are recorded as inserting (so a retry does not record them again).</summary>
        public bool FlushRecorded { get; set; }

        /// <summary>Batches appended since the last successful flush; their senders are acked after it.</summary>
        public List<(string Node, ulong BatchId, TaskCompletionSource Stored)> AwaitingFlush { get; } = [];

        public void CompleteAwaiting()
        {
            foreach (var (_, _, stored) in AwaitingFlush)
            {
                stored.TrySetResult();
            }

            AwaitingFlush.Clear();
        }

        /// <summary>
        /// Takes the rows of <paramref name="batches"/> out of every table not inserted yet, and the
        /// batches out of the records and the acks: their stored-tasks end cancelled. Returns the rows taken out.
        /// </summary>
        public int LeaveOut(IReadOnlySet<(string Node, ulong BatchId)> batches)
        {
            var rows = 0;
            foreach (var pending in Batches)
            {
                var (removedRows, removedBytes) = pending.Remove(batches);
                rows += removedRows;
                RowCount -= removedRows;
                ByteCount -= removedBytes;
            }

            FlushBatches.RemoveAll(b => batches.Contains((b.Node, b.BatchId)));
            AwaitingFlush.RemoveAll(b =>
            {
                if (!batches.Contains((b.Node, b.BatchId)))
                {
                    return false;
                }

                b.Stored.TrySetCanceled();
                return true;
            });
            return rows;
        }
    }

    /// <summary>The rows waiting for one table, in the insert format the options chose.</summary>
    private sealed class PendingBatch(EventTable table, string qualifiedName, ClickHouseOptions options)
    {
        private const int InitialCapacity = 64 * 1024;

        private RowBinaryWriter? _rows = options.InsertFormat == ClickHouseInsertFormat.RowBinary ? new(InitialCapacity) : null;
        private readonly NativeBlock? _block = options.InsertFormat == ClickHouseInsertFormat.Native ? new(table, options.SortNativeRows) : null;

        public EventTable Table { get; } = table;

        public string QualifiedName { get; } = qualifiedName;

        public int Count { get; private set; }

        /// <summary>Memory the rows hold.</summary>
        public long Bytes => _rows?.Length ?? _block!.Bytes;

        /// <summary>The (node, batch id) pairs of the rows held.</summary>
        public HashSet<(string Node, ulong BatchId)> Batches { get; } = [];

        // Where each sensor batch's rows are (a batch's rows of one table arrive together), so a
        // batch can be taken out again.
        private readonly List<Segment> _segments = [];

        /// <summary>The query id of an earlier attempt whose outcome is unknown, or null.</summary>
        public string? UnknownOutcomeQueryId { get; set; }

        public void Append(Event e, EventBatch batch)
        {
            var start = _rows?.Length ?? 0;
            if (_rows is not null)
            {
                Table.WriteRow(_rows, e, batch.BatchId);
            }
            else
            {
                _block!.Append(e, batch.BatchId);
            }

            AddRows(e.Node, batch.BatchId, 1, start);
        }

        /// <summary>Appends rows decoded at ingest (only Native blocks: the decoder leaves RowBinary inserts on the object path).</summary>
        public void AppendBlock(NativeBlock rows, EventBatch batch)
        {
            if (_block is null)
            {
                throw new InvalidOperationException("Rows decoded into Native columns reached a RowBinary writer.");
            }

            var count = rows.Rows;
            _block.AppendBlock(rows);
            AddRows(batch.Node, batch.BatchId, count, 0);
        }

        /// <summary>Takes out the rows of <paramref name="batches"/>; returns how many rows, and the memory they held.</summary>
        public (int Rows, long Bytes) Remove(IReadOnlySet<(string Node, ulong BatchId)> batches)
        {
            if (Count == 0 || !Batches.Overlaps(batches))
            {
                return (0, 0);
            }

            var (rowsBefore, bytesBefore) = (Count, Bytes);
            // Last first, so the places of the segments before stay valid.
            for (var i = _segments.Count - 1; i >= 0; i--)
            {
                var segment = _segments[i];
                if (!batches.Contains((segment.Node, segment.BatchId)))
                {
                    continue;
                }

                var bytes = 0;
                if (_rows is not null)
                {
                    var end = i + 1 < _segments.Count ? _segments[i + 1].FirstByte : _rows.Length;
                    bytes = end - segment.FirstByte;
                    _rows.RemoveRange(segment.FirstByte, bytes);
                }
                else
                {
                    _block!.RemoveRows(segment.FirstRow, segment.Rows);
                }

                Count -= segment.Rows;
                _segments.RemoveAt(i);
                for (var later = i; later < _segments.Count; later++)
                {
                    var next = _segments[later];
                    _segments[later] = next with { FirstRow = next.FirstRow - segment.Rows, FirstByte = next.FirstByte - bytes };
                }
            }

            Batches.ExceptWith(batches);
            return (rowsBefore - Count, bytesBefore - Bytes);
        }

        // Not the batch itself: its events must not stay alive until the insert.
        private void AddRows(string node, ulong batchId, int rows, int firstByte)
        {
            if (_segments.Count > 0 && _segments[^1].BatchId == batchId && string.Equals(_segments[^1].Node, node, StringComparison.Ordinal))
            {
                _segments[^1] = _segments[^1] with { Rows = _segments[^1].Rows + rows };
            }
            else
            {
                _segments.Add(new Segment(node, batchId, Count, rows, firstByte));
                Batches.Add((node, batchId));
            }

            Count += rows;
        }

        /// <summary>One sensor batch's rows in this table: the first row, how many, and (RowBinary) where they start.</summary>
        private readonly record struct Segment(string Node, ulong BatchId, int FirstRow, int Rows, int FirstByte);

        /// <summary>Sends the rows as one INSERT; they stay held (for a retry) until <see cref="Clear"/>.</summary>
        public Task InsertAsync(ClickHouseHttpClient client, string queryId, CancellationToken ct) =>
            _rows is not null
                ? client.InsertRowBinaryAsync(QualifiedName, Table.InsertColumnNames, _rows.WrittenMemory, ct, queryId)
                : client.InsertAsync(QualifiedName, Table.InsertColumnNames, "Native", _block!.EncodedLength(), _block.WriteToAsync, ct, queryId);

        public void Clear()
        {
            if (_rows is not null)
            {
                // A buffer far larger than what it carried was grown by a burst: let it go rather than
                // pin it, while a steady load keeps reusing its buffer.
                if (_rows.Capacity > 1024 * 1024 && _rows.Capacity > 4 * _rows.Length)
                {
                    _rows = new RowBinaryWriter(Math.Max(InitialCapacity, _rows.Length));
                }

                _rows.Clear();
            }
            else
            {
                _block!.Clear();
            }

            Count = 0;
            Batches.Clear();
            _segments.Clear();
            UnknownOutcomeQueryId = null;
        }
    }
}
