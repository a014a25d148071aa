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
    private readonly LinkedList<Unacked> _unacked = new();
    private readonly SemaphoreSlim _ackSignal = new(0);
    private ulong _nextBatchId = (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() << 16;
    private CancellationToken _stopping;
    private DiskSpool? _spool;
    // Events taken from the queue and learned, not yet named and encoded (TakeAvailable).
    private readonly List<Event> _run = [];
    // Events whose naming waits for the rest of their batch (EndpointEnricher.TryName).
    private readonly List<Event> _heldBack = [];

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
        while (true)
        {
            var rest = new EventBatchBytes { Node = o.Node };
            while (rest.EventCount + _heldBack.Count < o.BatchMaxEvents && TakeAvailable(rest, o.BatchMaxEvents))
            {
                // TakeAvailable takes what is queued now, a run at a time, until the batch is full.
            }
            FinishBatch(rest);
            if (rest.EventCount == 0)
            {
                break;
            }
            rest.BatchId = _nextBatchId++;
            SpoolOrDrop(rest.ToByteArray(), rest.EventCount);
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
            if (batch.EventCount > 0)
            {
                batch.Node = options.Value.Node;
                batch.BatchId = _nextBatchId++;
                SpoolOrDrop(batch.ToByteArray(), batch.EventCount);
            }
        }
    }

    /// <summary>Moves batches sent but never acked from memory to the spool, oldest first.</summary>
    private void SpoolHeld()
    {
        EventBatchBytes[] held;
        lock (_unacked)
        {
            // Batches replayed from the spool are still on disk: only those built here move there.
            held = [.. _unacked.Where(b => b.Built is not null).Select(b => b.Built!)];
            _unacked.Clear();
        }
        foreach (var batch in held)
        {
            batch.Resent = true; // sent once already: the relay may have stored it without its ack reaching us
            // Not released to the pool afterwards: the ended stream may still be writing it.
            SpoolOrDrop(batch.ToByteArray(), batch.EventCount);
        }
    }

    private void SpoolOrDrop(byte[] batch, int events)
    {
        if (_spool is null)
        {
            Interlocked.Add(ref _droppedWithoutSpool, events);
            logger.LogWarning("Dropped {Events} events: relay unreachable at shutdown and no spool configured", events);
            return;
        }
        lock (_spool)
        {
            _spool.Append(batch, events);
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
        Unacked[] pending;
        lock (_unacked)
        {
            pending = [.. _unacked];
        }
        foreach (var batch in pending)
        {
            await call.WriteAsync(batch.Resend(), ct);
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
            if (batch.EventCount == 0 && (_stopping.IsCancellationRequested || DateTime.UtcNow - lastSent < o.HeartbeatInterval))
            {
                continue;
            }
            batch.Node = o.Node;
            batch.BatchId = _nextBatchId++;
            var now = DateTime.UtcNow;
            if (batch.EventCount == 0 || now - lastStatus >= o.StatusInterval)
            {
                // Not on every batch: a snapshot reads every capture's kernel counters and program
                // info (about 0.2 ms of syscalls), and batches leave up to tens of times a second.
                batch.Status = status.Snapshot();
                AddCounters(batch.Status.Counters);
                lastStatus = now;
            }
            lock (_unacked)
            {
                _unacked.AddLast(new Unacked(batch));
            }
            await call.WriteAsync(batch, ct);
            lastSent = now;
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
            // It goes out as read (generated code): a spool written by another version may hold
            // fields this one would not write.
            batch.Resent = true;
            lock (_unacked)
            {
                _unacked.AddLast(new Unacked(batch, seq));
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

    /// <summary>
    /// Takes up to BatchMaxEvents events, waiting at most BatchMaxDelay. Once a batch is started the
    /// exporter is woken when it is full or at its deadline, not every few hundred events: the
    /// capture threads queue nearly every event as its encoded bytes, which need nothing more until
    /// the batch leaves, and a thread-pool worker's wake-up (the hand-off, futex, spinning before it
    /// parks again) cost more than the work it did (docs/benchmarks.md, issue 3, eighth session).
    /// Events queued as objects (their peer not claimed yet) are named and encoded when taken.
    /// </summary>
    private async Task<EventBatchBytes> CollectAsync(SensorOptions o, CancellationToken ct)
    {
        var batch = new EventBatchBytes();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(o.BatchMaxDelay);
        try
        {
            while (batch.EventCount + _heldBack.Count < o.BatchMaxEvents)
            {
                if (TakeAvailable(batch, o.BatchMaxEvents))
                {
                    continue;
                }
                int taken = batch.EventCount + _heldBack.Count;
                if (taken == 0)
                {
                    if (!await queue.Reader.WaitToReadAsync(timeout.Token))
                    {
                        break;
                    }
                }
                else
                {
                    // A batch is started: wake when it is full (or at the deadline), not for each event.
                    await queue.WaitForAsync(o.BatchMaxEvents - taken, timeout.Token);
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            // The batch's time is up: send what we have.
        }
        FinishBatch(batch);
        return batch;
    }

    /// <summary>
    /// Takes the events queued now (up to <paramref name="max"/> in the batch). Those queued as bytes
    /// (enriched and encoded by the capture that offered them, see <see cref="SensorEventQueue"/>)
    /// go into the batch as they are; of those queued as events, the local addresses of the whole
    /// run are learned first, then each is named and encoded, or held back for the end of the batch
    /// when a peer address may still be claimed by a later event. False when the queue was empty.
    /// </summary>
    private bool TakeAvailable(EventBatchBytes batch, int max)
    {
        bool took = false;
        while (batch.EventCount + _heldBack.Count + _run.Count < max && queue.Reader.TryRead(out var queued))
        {
            took = true;
            if (queued.Encoded is { } encoded)
            {
                batch.AddEncoded(encoded);
                continue;
            }
            var e = queued.Event!;
            enricher.Learn(e);
            _run.Add(e);
        }
        foreach (var e in _run)
        {
            if (enricher.TryName(e))
            {
                batch.Add(e);
            }
            else
            {
                _heldBack.Add(e);
            }
        }
        _run.Clear();
        return took;
    }

    /// <summary>Names and encodes the events held back for the end of the batch.</summary>
    private void FinishBatch(EventBatchBytes batch)
    {
        foreach (var e in _heldBack)
        {
            enricher.NameAtBatchEnd(e);
            batch.Add(e);
        }
        _heldBack.Clear();
    }

    private async Task ReadAcksAsync(GrpcDuplexCall<IMessage, IngestAck> call, CancellationToken ct)
    {
        while (await call.ReadAsync(ct) is { } ack)
        {
            lock (_unacked)
            {
                for (var node = _unacked.First; node is not null; node = node.Next)
                {
                    var batch = node.Value;
                    if (batch.BatchId == ack.BatchId)
                    {
                        Interlocked.Add(ref status.EventsAcked, batch.Events);
                        _unacked.Remove(node);
                        if (batch.SpoolSequence is { } seq && _spool is { } spool)
                        {
                            lock (spool)
                            {
                                spool.Remove(seq);
                            }
                        }
                        batch.Acked();
                        break;
                    }
                }
            }
            _ackSignal.Release();
        }
    }

    /// <summary>
    /// A batch sent and not acked yet: built here (held as bytes), or read back from the spool
    /// (held as parsed, with its spool sequence, deleted from disk once acked).
    /// </summary>
    private sealed class Unacked
    {
        private readonly EventBatch? _spooled;
        private bool _sentAgain;

        public Unacked(EventBatchBytes built) => (Built, BatchId, Events) = (built, built.BatchId, built.EventCount);

        public Unacked(EventBatch spooled, ulong sequence) =>
            (_spooled, SpoolSequence, BatchId, Events) = (spooled, sequence, spooled.BatchId, spooled.Events.Count);

        public EventBatchBytes? Built { get; }

        public ulong? SpoolSequence { get; }

        public ulong BatchId { get; }

        public int Events { get; }

        /// <summary>The batch marked as sent before, to write on a new stream.</summary>
        public IMessage Resend()
        {
            _sentAgain = true;
            if (Built is { } built)
            {
                built.Resent = true;
                return built;
            }
            _spooled!.Resent = true;
            return _spooled;
        }

        /// <summary>
        /// The relay has it. Its bytes go back to the pool only if it was written once: the ack
        /// proves that write finished, but a batch resent after a lost stream may still be being
        /// written on the old one.
        /// </summary>
        public void Acked()
        {
            if (!_sentAgain)
            {
                Built?.Release();
            }
        }
    }
}
