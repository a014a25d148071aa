using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Sensor.Attribution;
using Google.Protobuf;
using Microsoft.Extensions.Options;

namespace FlowSec.Sensor.Export;

/// <summary>
/// Streams the sensor's events to the relay in batches over <c>Ingest/Push</c>. A batch stays in
/// memory until the relay acks it and is sent again after a reconnect, so a relay restart loses
/// nothing the sensor had queued. A batch sent again (after a lost stream, or from the spool) is
/// marked <c>resent</c>, so the relay checks whether it already stored it; fresh batches are not.
/// </summary>
public sealed class RelayExporter(
    SensorEventQueue queue,
    SensorStatusReporter status,
    EndpointEnricher enricher,
    IOptions<SensorOptions> options,
    ILogger<RelayExporter> logger) : BackgroundService
{
    private readonly LinkedList<EventBatch> _unacked = new();
    private readonly SemaphoreSlim _ackSignal = new(0);
    private ulong _nextBatchId = (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() << 16;
    private CancellationToken _stopping;
    // Batch ids replayed from the spool → their spool sequence, deleted from disk once acked.
    private readonly Dictionary<ulong, ulong> _spooledIds = [];
    private DiskSpool? _spool;

    /// <summary>Whether a stream to the relay is open right now.</summary>
    public bool Connected { get; private set; }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stopping)
    {
        // On shutdown, keep sending what is queued and wait for its acks, for a bounded time:
        // a restart of the sensor should not lose what it had already captured.
        using var hardStop = new CancellationTokenSource();
        using var registration = stopping.Register(() => hardStop.CancelAfter(options.Value.ShutdownDrainTimeout));
        _stopping = stopping;
        var stoppingToken = hardStop.Token;
        var o = options.Value;
        if (o.SpoolDirectory.Length > 0)
        {
            _spool = new DiskSpool(o.SpoolDirectory, o.SpoolMaxBytes);
            if (_spool.Batches > 0)
            {
                logger.LogInformation("Spool {Directory} holds {Batches} batches ({Events} events) from before; they go first",
                    o.SpoolDirectory, _spool.Batches, _spool.Events);
            }
        }
        var token = o.TokenFile.Length > 0 ? TokenFile.Read(o.TokenFile) : null;
        var relays = RelayAddresses(o.Relay);
        var current = 0;
        var failedInARow = 0;
        var backoff = TimeSpan.FromMilliseconds(200);
        while (!stoppingToken.IsCancellationRequested)
        {
            if (_stopping.IsCancellationRequested && queue.Count == 0 && UnackedCount == 0)
            {
                break;
            }
            try
            {
                var relay = relays[current];
                using var client = new GrpcClient(relay, token, tls: o.Tls.IsConfigured ? o.Tls : null);
                await using var call = await client.DuplexAsync<IMessage, IngestAck>(
                    RelayMethods.Push, IngestAck.Parser, stoppingToken);
                using var streamCts = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                var acks = ReadAcksAsync(call, streamCts.Token);
                Connected = true;
                logger.LogInformation("Streaming to relay {Relay} as node {Node}", relay, o.Node);
                backoff = TimeSpan.FromMilliseconds(200);
                failedInARow = 0;
                try
                {
                    await SendLoopAsync(call, acks, streamCts.Token);
                }
                finally
                {
                    Connected = false;
                    await streamCts.CancelAsync();
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex) when (ex is GrpcException or HttpRequestException or IOException or OperationCanceledException)
            {
                var failed = relays[current];
                failedInARow++;
                if (relays.Count > 1)
                {
                    // Relays are stateless: the next one takes over, and the unacked batches go there.
                    current = (current + 1) % relays.Count;
                    Interlocked.Increment(ref _failovers);
                    if (failedInARow < relays.Count)
                    {
                        logger.LogWarning("Relay {Relay} unavailable ({Error}); trying {Next}", failed, ex.Message, relays[current]);
                        continue;
                    }
                }
                failedInARow = 0;
                logger.LogWarning("Relay {Relay} unavailable ({Error}); {Unacked} batches held, retrying in {Backoff}",
                    relays.Count > 1 ? string.Join(", ", relays) : failed, ex.Message, UnackedCount, backoff);
                try
                {
                    await SpoolWhileAwayAsync(backoff, stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                backoff = TimeSpan.FromMilliseconds(Math.Min(backoff.TotalMilliseconds * 2, 5000));
            }
        }
        // Stopping without a relay (or out of drain time): what is still held goes to disk for the next run.
        SpoolHeld();
        while (queue.Reader.TryRead(out var e))
        {
            var rest = new EventBatch { Node = o.Node, BatchId = _nextBatchId++ };
            rest.Events.Add(e);
            while (rest.Events.Count < o.BatchMaxEvents && queue.Reader.TryRead(out var more))
            {
                rest.Events.Add(more);
            }
            enricher.Enrich(rest.Events);
            SpoolOrDrop(rest);
        }
    }

    /// <summary>Adds the exporter's counters (spool, unacked) to <paramref name="counters"/>.</summary>
    public void AddCounters(IDictionary<string, ulong> counters)
    {
        counters["export_unacked_batches"] = (ulong)UnackedCount;
        counters["export_relay_failovers"] = (ulong)Interlocked.Read(ref _failovers);
        counters["export_dropped_no_spool"] = (ulong)Interlocked.Read(ref _droppedWithoutSpool);
        if (_spool is { } spool)
        {
            lock (spool)
            {
                counters["spool_batches"] = (ulong)spool.Batches;
                counters["spool_bytes"] = (ulong)spool.Bytes;
                counters["spool_dropped_events"] = (ulong)spool.DroppedEvents;
                counters["spool_corrupt_files"] = (ulong)spool.CorruptFiles;
            }
        }
    }

    private long _droppedWithoutSpool;
    private long _failovers;

    /// <summary>
    /// The relay addresses of <paramref name="relay"/> ("http://a:4245" or "http://a:4245,http://b:4245"),
    /// in the order they are tried. Throws <see cref="ArgumentException"/> naming a bad one.
    /// </summary>
    public static IReadOnlyList<Uri> RelayAddresses(string relay)
    {
        var addresses = new List<Uri>();
        foreach (var part in relay.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Uri.TryCreate(part, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || uri.Host.Length == 0)
            {
                throw new ArgumentException($"--Sensor:Relay: '{part}' is not a relay address (http://host:port)");
            }
            addresses.Add(uri);
        }
        return addresses.Count > 0 ? addresses : throw new ArgumentException("--Sensor:Relay is empty");
    }

    /// <summary>While the relay is away: keep draining the queue into the spool for <paramref name="duration"/>.</summary>
    private async Task SpoolWhileAwayAsync(TimeSpan duration, CancellationToken ct)
    {
        if (_spool is null)
        {
            await Task.Delay(duration, ct); // no spool: the bounded queue (then its drop counter) absorbs the outage
            return;
        }
        SpoolHeld();
        var until = DateTime.UtcNow + duration;
        while (DateTime.UtcNow < until)
        {
            var batch = await CollectAsync(options.Value, ct);
            if (batch.Events.Count > 0)
            {
                batch.Node = options.Value.Node;
                batch.BatchId = _nextBatchId++;
                enricher.Enrich(batch.Events);
                SpoolOrDrop(batch);
            }
        }
    }

    /// <summary>Moves batches sent but never acked from memory to the spool, oldest first.</summary>
    private void SpoolHeld()
    {
        EventBatch[] held;
        lock (_unacked)
        {
            held = [.. _unacked.Where(b => !_spooledIds.ContainsKey(b.BatchId))];
            _unacked.Clear();
            _spooledIds.Clear();
        }
        foreach (var batch in held)
        {
            batch.Resent = true; // sent once already: the relay may have stored it without its ack reaching us
            SpoolOrDrop(batch);
        }
    }

    private void SpoolOrDrop(EventBatch batch)
    {
        if (_spool is null)
        {
            Interlocked.Add(ref _droppedWithoutSpool, batch.Events.Count);
            logger.LogWarning("Dropped {Events} events: relay unreachable at shutdown and no spool configured", batch.Events.Count);
            return;
        }
        lock (_spool)
        {
            _spool.Append(batch);
        }
    }

    private int UnackedCount
    {
        get
        {
            lock (_unacked)
            {
                return _unacked.Count;
            }
        }
    }

    private async Task SendLoopAsync(GrpcDuplexCall<IMessage, IngestAck> call, Task acks, CancellationToken ct)
    {
        var o = options.Value;
        // Resend what the previous stream did not get acked, oldest first.
        EventBatch[] pending;
        lock (_unacked)
        {
            pending = [.. _unacked];
        }
        foreach (var batch in pending)
        {
            batch.Resent = true;
            await call.WriteAsync(Encoded(batch), ct);
        }
        await ReplaySpoolAsync(call, acks, ct);
        var lastSent = DateTime.UtcNow - o.HeartbeatInterval;
        // The relay keeps a node's last status: the first batch of a stream carries one.
        var lastStatus = DateTime.MinValue;
        while (true)
        {
            if (acks.IsCompleted)
            {
                await acks; // surfaces the stream's error
                throw new IOException("relay closed the stream");
            }
            await WaitForWindowAsync(acks, ct);
            if (_stopping.IsCancellationRequested && queue.Count == 0 && UnackedCount == 0)
            {
                logger.LogInformation("Drained: every captured event was acked by the relay");
                return;
            }
            var batch = await CollectAsync(o, ct);
            if (batch.Events.Count == 0 && (_stopping.IsCancellationRequested || DateTime.UtcNow - lastSent < o.HeartbeatInterval))
            {
                continue;
            }
            enricher.Enrich(batch.Events);
            batch.Node = o.Node;
            batch.BatchId = _nextBatchId++;
            var now = DateTime.UtcNow;
            if (batch.Events.Count == 0 || now - lastStatus >= o.StatusInterval)
            {
                // Not on every batch: a snapshot reads every capture's kernel counters and program
                // info (about 0.2 ms of syscalls), and batches leave up to tens of times a second.
                batch.Status = status.Snapshot();
                AddCounters(batch.Status.Counters);
                lastStatus = now;
            }
            lock (_unacked)
            {
                _unacked.AddLast(batch);
            }
            await call.WriteAsync(new EncodedEventBatch(batch), ct);
            lastSent = now;
        }
    }

    /// <summary>
    /// A batch as it goes on the wire: those this sensor built through <see cref="EncodedEventBatch"/>
    /// (sized once); those read back from the spool as they are, since a spool written by another
    /// version may hold fields this one would not write.
    /// </summary>
    private IMessage Encoded(EventBatch batch)
    {
        lock (_unacked)
        {
            return _spooledIds.ContainsKey(batch.BatchId) ? batch : new EncodedEventBatch(batch);
        }
    }

    /// <summary>Sends the spooled batches, oldest first, with their original ids (the relay drops duplicates).</summary>
    private async Task ReplaySpoolAsync(GrpcDuplexCall<IMessage, IngestAck> call, Task acks, CancellationToken ct)
    {
        if (_spool is null)
        {
            return;
        }
        IReadOnlyList<ulong> sequences;
        lock (_spool)
        {
            sequences = _spool.Sequences();
        }
        foreach (var seq in sequences)
        {
            await WaitForWindowAsync(acks, ct);
            EventBatch? batch;
            lock (_spool)
            {
                batch = _spool.Read(seq);
            }
            if (batch is null)
            {
                continue;
            }
            // A spooled batch may have been sent on an earlier stream (of this run or the last)
            // that ended before its ack; the spool file does not say, so the relay checks them all.
            batch.Resent = true;
            lock (_unacked)
            {
                _unacked.AddLast(batch);
                _spooledIds[batch.BatchId] = seq;
            }
            await call.WriteAsync(batch, ct);
        }
    }

    private async Task WaitForWindowAsync(Task acks, CancellationToken ct)
    {
        while (UnackedCount >= options.Value.MaxUnackedBatches)
        {
            await _ackSignal.WaitAsync(TimeSpan.FromSeconds(1), ct);
            if (acks.IsCompleted)
            {
                await acks;
                throw new IOException("relay closed the stream");
            }
        }
    }

    /// <summary>Takes up to BatchMaxEvents events, waiting at most BatchMaxDelay for the first ones.</summary>
    private async Task<EventBatch> CollectAsync(SensorOptions o, CancellationToken ct)
    {
        var batch = new EventBatch();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(o.BatchMaxDelay);
        try
        {
            while (batch.Events.Count < o.BatchMaxEvents)
            {
                if (queue.Reader.TryRead(out var e))
                {
                    batch.Events.Add(e);
                    continue;
                }
                if (batch.Events.Count == 0)
                {
                    if (!await queue.Reader.WaitToReadAsync(timeout.Token))
                    {
                        break;
                    }
                }
                else
                {
                    // A batch is started: it leaves when full or at its deadline, so waking for
                    // each event in between would only add hand-offs.
                    await queue.WaitForAsync(o.BatchMaxEvents - batch.Events.Count, timeout.Token);
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            // The batch's time is up: send what we have.
        }
        return batch;
    }

    private async Task ReadAcksAsync(GrpcDuplexCall<IMessage, IngestAck> call, CancellationToken ct)
    {
        while (await call.ReadAsync(ct) is { } ack)
        {
            lock (_unacked)
            {
                for (var node = _unacked.First; node is not null; node = node.Next)
                {
                    if (node.Value.BatchId == ack.BatchId)
                    {
                        Interlocked.Add(ref status.EventsAcked, node.Value.Events.Count);
                        _unacked.Remove(node);
                        if (_spooledIds.Remove(ack.BatchId, out var seq) && _spool is { } spool)
                        {
                            lock (spool)
                            {
                                spool.Remove(seq);
                            }
                        }
                        break;
                    }
                }
            }
            _ackSignal.Release();
        }
    }
}
