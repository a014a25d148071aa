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
/// <see cref="ClickHouseOptions.FlushInterval"/> old. A failed insert is retried with backoff,
/// holding the batches (a table already inserted is not sent again); meanwhile nothing is read from
/// the bounded queue, so ingest waits (backpressure) instead of losing events. Every row carries
/// its sensor batch id; an insert whose outcome is unknown (the connection broke, the server died
/// after reading it) is looked up by those ids before it is sent again, so it is never stored
/// twice. Each flush records its batches in <c>stored_batches</c> as inserting before the first row
/// is sent, and as stored after the last.
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
    private readonly List<(string Node, ulong BatchId, int Events)> _flushBatches = [];
    private bool _flushRecorded;
    private readonly ClickHouseOptions _options;
    private readonly ILogger<ClickHouseFlowWriter> _log;
    private readonly PendingBatch[] _batches;
    private readonly Dictionary<EventType, PendingBatch> _batchByType;
    private int _rowCount;
    private long _byteCount;
    private bool _full;
    private long _stored;
    private long _inserts;
    private long _insertErrors;
    private long _notStored;
    private long _dropped;
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
        _batches = EventTables.All.Select(t => new PendingBatch(t, database + "." + t.Name, options)).ToArray();
        _batchByType = _batches.SelectMany(b => b.Table.Types.Select(type => (type, b))).ToDictionary(x => x.type, x => x.b);
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

    private long _unknownFoundStored;

    /// <summary>Events lost because the relay stopped while ClickHouse was refusing them.</summary>
    public long EventsDropped => Interlocked.Read(ref _dropped);

    /// <summary>The last ClickHouse error, or null after a successful insert.</summary>
    public string? LastError => _lastError;

    /// <summary>True once the schema has been created or found.</summary>
    public bool SchemaReady => _schemaReady;

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var queue = _pipeline.StorageQueue;
        try
        {
            await RetryAsync(EnsureSchemaAsync, stoppingToken);
            var firstRowAt = 0L;
            while (true)
            {
                while (!_full && queue.TryRead(out var item))
                {
                    if (_rowCount == 0)
                    {
                        firstRowAt = Stopwatch.GetTimestamp();
                    }

                    Append(item.Batch);
                    _awaitingFlush.Add(item.Stored);
                    if (_rowCount == 0)
                    {
                        CompleteAwaiting(); // nothing to insert (a heartbeat): held already
                    }
                }

                var waited = Stopwatch.GetElapsedTime(firstRowAt);
                if (_full || (_rowCount > 0 && waited >= _options.FlushInterval))
                {
                    await RetryAsync(FlushAsync, stoppingToken);
                    continue;
                }

                if (!await WaitForDataAsync(queue, _rowCount > 0 ? _options.FlushInterval - waited : Timeout.InfiniteTimeSpan, stoppingToken))
                {
                    break; // the pipeline completed: store what is left and stop
                }
            }

            await RetryAsync(FlushAsync, stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            await FlushOnShutdownAsync(queue);
        }
    }

    /// <summary>Batches appended since the last successful flush; their senders are acked after it.</summary>
    private readonly List<TaskCompletionSource> _awaitingFlush = [];

    private void CompleteAwaiting()
    {
        foreach (var stored in _awaitingFlush)
        {
            stored.TrySetResult();
        }
        _awaitingFlush.Clear();
    }

    private void Append(EventBatch batch)
    {
        // A batch can overshoot the limits by its own size; sensors send batches far smaller than them.
        var rows = 0;
        foreach (var e in batch.Events)
        {
            if (!_batchByType.TryGetValue(e.Type, out var pending))
            {
                Interlocked.Increment(ref _notStored);
                continue;
            }

            if (!ReferenceEquals(pending.LastBatch, batch))
            {
                pending.LastBatch = batch;
                pending.Batches.Add((e.Node, batch.BatchId));
            }

            var before = pending.Bytes;
            pending.Append(e, batch.BatchId);
            rows++;
            _rowCount++;
            _byteCount += pending.Bytes - before;
            _full |= pending.Count >= _options.BatchMaxRows || _byteCount >= _options.BatchMaxBytes;
        }

        if (rows > 0 && batch.BatchId != 0)
        {
            _flushBatches.Add((batch.Node, batch.BatchId, rows));
        }
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

    private async Task FlushAsync(CancellationToken ct)
    {
        if (_rowCount == 0)
        {
            return;
        }

        await EnsureSchemaAsync(ct);
        if (!_flushRecorded)
        {
            // Before any row: a re-sent batch without this record was never sent (see StoredBatches).
            await _ledger.RecordAsync(_flushBatches, "inserting", ct);
            _flushRecorded = true;
        }

        foreach (var pending in _batches)
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
            _rowCount -= pending.Count;
            _byteCount -= pending.Bytes;
            pending.Clear();
        }

        _full = false;
        _lastError = null;
        await RecordStoredAsync(ct);
        CompleteAwaiting();
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
    private async Task RecordStoredAsync(CancellationToken ct)
    {
        try
        {
            await _ledger.RecordAsync(_flushBatches, "stored", ct);
        }
        catch (Exception e) when (e is ClickHouseException or HttpRequestException)
        {
            _log.LogWarning("Could not record {Batches} stored batches: {Error}", _flushBatches.Count, e.Message);
        }

        _flushBatches.Clear();
        _flushRecorded = false;
    }

    private async Task RetryAsync(Func<CancellationToken, Task> action, CancellationToken ct)
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
                _log.LogWarning("ClickHouse write failed ({Rows} rows held, attempt {Attempt}), retrying in {Delay}: {Error}", _rowCount, attempt + 1, delay, e.Message);
                await Task.Delay(delay, ct);
            }
        }
    }

    private async Task FlushOnShutdownAsync(System.Threading.Channels.ChannelReader<StorageItem> queue)
    {
        while (queue.TryRead(out var item))
        {
            var batch = item.Batch;
            _awaitingFlush.Add(item.Stored);
            Append(batch);
        }

        using var cts = new CancellationTokenSource(ShutdownFlushTimeout);
        try
        {
            await FlushAsync(cts.Token);
        }
        catch (Exception e)
        {
            Interlocked.Add(ref _dropped, _rowCount);
            _lastError = e.Message;
            _log.LogError("Stopping with {Rows} events not stored: {Error}", _rowCount, e.Message);
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

        /// <summary>The last batch rows were appended from, so each batch is listed once cheaply.</summary>
        public EventBatch? LastBatch { get; set; }

        /// <summary>The query id of an earlier attempt whose outcome is unknown, or null.</summary>
        public string? UnknownOutcomeQueryId { get; set; }

        public void Append(Event e, ulong batchId)
        {
            if (_rows is not null)
            {
                Table.WriteRow(_rows, e, batchId);
            }
            else
            {
                _block!.Append(e, batchId);
            }

            Count++;
        }

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
            LastBatch = null;
            UnknownOutcomeQueryId = null;
        }
    }
}
