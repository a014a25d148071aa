using System.Diagnostics;
using FlowSec.Api.V1;
using FlowSec.Relay.Pipeline;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FlowSec.Relay.Storage;

/// <summary>
/// Drains <see cref="EventPipeline.StorageQueue"/> into the <c>flows</c> table: flow events are
/// encoded as RowBinary into one large batch, sent when it holds <see cref="ClickHouseOptions.BatchMaxRows"/>
/// rows or its first row is <see cref="ClickHouseOptions.FlushInterval"/> old. A failed insert is
/// retried with backoff, holding the batch; meanwhile nothing is read from the bounded queue, so
/// ingest waits (backpressure) instead of losing events.
/// </summary>
public sealed class ClickHouseFlowWriter : BackgroundService
{
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan ShutdownFlushTimeout = TimeSpan.FromSeconds(5);

    private readonly EventPipeline _pipeline;
    private readonly ClickHouseHttpClient _client;
    private readonly ClickHouseSchema _schema;
    private readonly ClickHouseOptions _options;
    private readonly ILogger<ClickHouseFlowWriter> _log;
    private readonly string _table;
    private readonly RowBinaryWriter _rows = new(1024 * 1024);
    private int _rowCount;
    private long _stored;
    private long _inserts;
    private long _insertErrors;
    private long _notStored;
    private long _dropped;
    private volatile string? _lastError;
    private volatile bool _schemaReady;

    /// <summary>Creates the writer; it starts consuming when the host starts it.</summary>
    public ClickHouseFlowWriter(EventPipeline pipeline, ClickHouseHttpClient client, ClickHouseSchema schema, ClickHouseOptions options, ILogger<ClickHouseFlowWriter> log)
    {
        if (options.BatchMaxRows <= 0 || options.FlushInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException("ClickHouse:BatchMaxRows and ClickHouse:FlushInterval must be positive.", nameof(options));
        }

        _pipeline = pipeline;
        _client = client;
        _schema = schema;
        _options = options;
        _log = log;
        _table = SqlLiteral.Identifier(options.Database) + "." + FlowTable.Name;
    }

    /// <summary>Flow events inserted into ClickHouse.</summary>
    public long EventsStored => Interlocked.Read(ref _stored);

    /// <summary>Successful INSERT statements (batches).</summary>
    public long Inserts => Interlocked.Read(ref _inserts);

    /// <summary>Failed insert (or schema) attempts; each is retried.</summary>
    public long InsertErrors => Interlocked.Read(ref _insertErrors);

    /// <summary>Events of types this writer has no table for yet (DNS, process, file); counted, not stored.</summary>
    public long EventsNotStored => Interlocked.Read(ref _notStored);

    /// <summary>Flow events lost because the relay stopped while ClickHouse was refusing them.</summary>
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
                while (_rowCount < _options.BatchMaxRows && queue.TryRead(out var batch))
                {
                    if (_rowCount == 0)
                    {
                        firstRowAt = Stopwatch.GetTimestamp();
                    }

                    Append(batch);
                }

                var waited = Stopwatch.GetElapsedTime(firstRowAt);
                if (_rowCount >= _options.BatchMaxRows || (_rowCount > 0 && waited >= _options.FlushInterval))
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

    private void Append(EventBatch batch)
    {
        // A batch can overshoot BatchMaxRows by its own size; sensors send batches far smaller than it.
        foreach (var e in batch.Events)
        {
            if (e.Type == EventType.Flow)
            {
                FlowTable.WriteRow(_rows, e);
                _rowCount++;
            }
            else
            {
                Interlocked.Increment(ref _notStored);
            }
        }
    }

    private static async Task<bool> WaitForDataAsync(System.Threading.Channels.ChannelReader<EventBatch> queue, TimeSpan timeout, CancellationToken stoppingToken)
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
        await _client.InsertRowBinaryAsync(_table, FlowTable.ColumnNames, _rows.WrittenMemory, ct);
        Interlocked.Add(ref _stored, _rowCount);
        Interlocked.Increment(ref _inserts);
        _rows.Clear();
        _rowCount = 0;
        _lastError = null;
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

    private async Task FlushOnShutdownAsync(System.Threading.Channels.ChannelReader<EventBatch> queue)
    {
        while (queue.TryRead(out var batch))
        {
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
            _log.LogError("Stopping with {Rows} flow events not stored: {Error}", _rowCount, e.Message);
        }
    }
}
