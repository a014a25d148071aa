using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;
using FlowSec.Relay.Storage;
using Google.Protobuf;

namespace FlowSec.Benchmarks;

/// <summary>
/// Issue 4's ingest benchmark, wall clock: a real relay process (this build's FlowSec.Relay.dll)
/// on its own managed ClickHouse, fed by simulated sensors — gRPC clients on the real
/// <c>Ingest/Push</c> method with the token, each its own HTTP/2 connection and node, sending
/// pre-serialized batches of QueryBenchmark's realistic flows and keeping at most the sensor's
/// window of unacked batches in flight (so the relay's backpressure paces them, as it paces
/// sensors). Reports stored rows/s over the steady part, the relay's memory over time, and the CPU
/// time of relay, clickhouse-server and this driver per stored row.
/// </summary>
internal static class IngestThroughput
{
    /// <summary>The sensor's default window of unacked batches (SensorOptions.MaxUnackedBatches).</summary>
    private const int MaxUnackedBatches = 64;

    /// <summary>Distinct batches of events the sensors cycle through (each send gets a fresh batch id).</summary>
    private const int DistinctBatches = 64;

    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(10);

    /// <summary>Runs the benchmark for <paramref name="seconds"/> with <paramref name="sensors"/> simulated sensors; 0 when every batch sent was acked.</summary>
    public static async Task<int> RunAsync(int seconds, int sensors, int batchEvents, string[] relaySettings)
    {
        var dir = Directory.CreateTempSubdirectory("flowsec-ingest-bench-").FullName;
        Process? relay = null;
        try
        {
            // Payloads first, so building them is not inside the measured window.
            var rows = DistinctBatches * batchEvents;
            var random = new Random(rows);
            var payloads = new byte[DistinctBatches][];
            for (var b = 0; b < DistinctBatches; b++)
            {
                var batch = new EventBatch();
                for (var i = 0; i < batchEvents; i++)
                {
                    var e = QueryBenchmark.Flow(b * batchEvents + i, rows, random);
                    e.Node = ""; // the relay sets each event's node from its batch
                    batch.Events.Add(e);
                }

                payloads[b] = batch.ToByteArray(); // only field 3 (events): node and batch id are prefixed per send
            }

            Console.WriteLine($"ingest: {sensors} sensors × batches of {batchEvents:N0} flows ({payloads.Average(p => p.Length) / batchEvents:0} bytes a flow in protobuf), " +
                              $"≤ {MaxUnackedBatches} unacked each, {seconds} s (first {WarmUp.TotalSeconds:0} s not counted), {Environment.ProcessorCount} cores, load average {QueryBenchmark.LoadAverage()}");

            var token = TokenFile.ReadOrCreate(Path.Combine(dir, "token"));
            await using var clickHouse = await ManagedClickHouse.StartAsync(Path.Combine(dir, "clickhouse"), QueryBenchmark.FreePort(), QueryBenchmark.FreePort(), CancellationToken.None);
            var grpcPort = QueryBenchmark.FreePort();
            relay = StartRelay(dir, grpcPort, Path.Combine(dir, "token"), clickHouse.Url, relaySettings);
            using var ch = new ClickHouseHttpClient(new ClickHouseOptions { Url = clickHouse.Url, RequestTimeout = TimeSpan.FromSeconds(30) });
            await WaitForSchemaAsync(ch, relay, Path.Combine(dir, "relay.log"));

            var address = new Uri($"http://127.0.0.1:{grpcPort}");
            using var stop = new CancellationTokenSource();
            var senders = Enumerable.Range(0, sensors).Select(i => new SimulatedSensor($"bench-node-{i}", address, token, payloads, batchEvents)).ToArray();
            var runs = senders.Select(s => Task.Run(() => s.RunAsync(stop.Token))).ToArray();

            var samples = new List<Sample>();
            var started = Stopwatch.StartNew();
            var self = Process.GetCurrentProcess();
            var next = TimeSpan.Zero;
            while (started.Elapsed < TimeSpan.FromSeconds(seconds))
            {
                next += TimeSpan.FromSeconds(1);
                var wait = next - started.Elapsed;
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait);
                }

                if (relay.HasExited || runs.Any(r => r.IsFaulted))
                {
                    throw new InvalidOperationException("relay or a sensor stopped early:\n" + Tail(Path.Combine(dir, "relay.log")));
                }

                self.Refresh();
                samples.Add(new Sample(started.Elapsed.TotalSeconds, await StoredRowsAsync(ch), senders.Sum(s => s.AckedEvents),
                    RssBytes(relay.Id), CpuSeconds(relay.Id), CpuSeconds(clickHouse.ProcessId), MergeCpuSeconds(clickHouse.ProcessId), self.TotalProcessorTime.TotalSeconds,
                    QueryBenchmark.LoadAverage()));
                if (samples.Count % 10 == 0)
                {
                    var (s, before) = (samples[^1], samples.Count > 10 ? samples[^11] : samples[0]);
                    Console.WriteLine($"  {s.Seconds,5:0} s  stored {s.Stored,12:N0}  last 10 s {(s.Stored - before.Stored) / (s.Seconds - before.Seconds),9:N0} rows/s  " +
                                      $"relay RSS {s.RelayRss / 1e6,6:0} MB  load {s.Load}");
                }
            }

            await stop.CancelAsync();
            await Task.WhenAll(runs);
            var sent = senders.Sum(s => s.SentEvents);
            var acked = senders.Sum(s => s.AckedEvents);

            Report(samples, sent, acked);
            await WaitForStoredAsync(ch, acked);
            Console.WriteLine($"  after the run: {await StoredRowsAsync(ch):N0} rows stored, {acked:N0} acked, {sent:N0} sent; load average {QueryBenchmark.LoadAverage()}");
            await ReportColumnsAsync(ch);
            return acked == sent ? 0 : 1;
        }
        finally
        {
            if (relay is not null)
            {
                await StopAsync(relay);
            }

            Directory.Delete(dir, recursive: true);
        }
    }

    private static void Report(List<Sample> samples, long sent, long acked)
    {
        var first = samples.First(s => s.Seconds >= WarmUp.TotalSeconds);
        var last = samples[^1];
        var rows = last.Stored - first.Stored;
        var seconds = last.Seconds - first.Seconds;
        Console.WriteLine($"  steady part ({first.Seconds:0}–{last.Seconds:0} s): {rows / seconds:N0} rows/s stored ({rows:N0} rows), {(last.Acked - first.Acked) / seconds:N0} events/s acked; sent {sent:N0}, acked {acked:N0}");
        double PerRow(Func<Sample, double> cpu) => (cpu(last) - cpu(first)) * 1e6 / rows;
        var (r, c, d) = (PerRow(s => s.RelayCpu), PerRow(s => s.ClickHouseCpu), PerRow(s => s.DriverCpu));
        Console.WriteLine($"  CPU µs/row: relay {r:0.00} + clickhouse-server {c:0.00} = {r + c:0.00} (→ {2e6 / (r + c):N0} rows/s if both cores did only this); driver {d:0.00}");
        var merges = PerRow(s => s.ClickHouseMergeCpu);
        Console.WriteLine($"  clickhouse-server split: background merges {merges:0.00} µs/row, inserts (with the views they fill) and queries {c - merges:0.00}");
        Console.WriteLine($"  CPU use (cores): relay {(last.RelayCpu - first.RelayCpu) / seconds:0.00}, clickhouse-server {(last.ClickHouseCpu - first.ClickHouseCpu) / seconds:0.00}, driver {(last.DriverCpu - first.DriverCpu) / seconds:0.00}; load average at start of steady part {first.Load}, at end {last.Load}");
        // Growth is judged on the steady part: in the warm-up the heap grows to its working size.
        var head = samples.Where(s => s.Seconds >= first.Seconds && s.Seconds <= first.Seconds + 20).Select(s => s.RelayRss).ToArray();
        var tail = samples.Where(s => s.Seconds >= last.Seconds - 20).Select(s => s.RelayRss).ToArray();
        Console.WriteLine($"  relay RSS: first 20 s of the steady part mean {head.Average() / 1e6:0} MB (max {head.Max() / 1e6:0}), last 20 s mean {tail.Average() / 1e6:0} MB (max {tail.Max() / 1e6:0}), " +
                          $"growth {(tail.Average() - head.Average()) / 1e6:+0;-0} MB; whole run max {samples.Max(s => s.RelayRss) / 1e6:0} MB");
        Console.WriteLine("  relay RSS every 5 s (MB): " + string.Join(' ', samples.Where((_, i) => i % 5 == 4).Select(s => (s.RelayRss / 1e6).ToString("0", CultureInfo.InvariantCulture))));
    }

    /// <summary>
    /// Bytes per stored flow of each table and of its widest columns (active parts, after the run):
    /// what LZ4 compresses and every merge reads and writes again.
    /// </summary>
    private static async Task ReportColumnsAsync(ClickHouseHttpClient ch)
    {
        var flows = (double)await StoredRowsAsync(ch);
        var columns = (await ch.QueryTextAsync(
                "SELECT table, name, data_uncompressed_bytes, data_compressed_bytes FROM system.columns " +
                "WHERE database = 'flowsec' AND data_uncompressed_bytes > 0 ORDER BY data_uncompressed_bytes DESC FORMAT TabSeparated"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t'))
            .Select(f => (Table: f[0], Name: f[1], Raw: long.Parse(f[2], CultureInfo.InvariantCulture) / flows, Lz4: long.Parse(f[3], CultureInfo.InvariantCulture) / flows))
            .ToList();
        Console.WriteLine("  bytes per stored flow, uncompressed / LZ4-compressed, by table (columns with data):");
        foreach (var table in columns.GroupBy(c => c.Table).OrderByDescending(t => t.Sum(c => c.Raw)))
        {
            Console.WriteLine($"    {table.Key,-24} {table.Sum(c => c.Raw),7:0.00} / {table.Sum(c => c.Lz4),6:0.00}  ({table.Count()})");
        }

        Console.WriteLine("  and by column of flows:");
        foreach (var column in columns.Where(c => c.Table == FlowTable.Table.Name))
        {
            Console.WriteLine($"    {column.Name,-24} {column.Raw,7:0.00} / {column.Lz4,6:0.00}");
        }
    }

    private static Process StartRelay(string dir, int grpcPort, string tokenFile, string clickHouseUrl, string[] settings)
    {
        // Through the shell only to send output to a file (never a pipe that could fill); exec keeps the pid the relay's.
        var info = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, WorkingDirectory = dir };
        string[] args =
        [
            "-c", "log=\"$0\"; exec \"$@\" >>\"$log\" 2>&1", Path.Combine(dir, "relay.log"),
            "dotnet", Path.Combine(AppContext.BaseDirectory, "FlowSec.Relay.dll"),
            $"--Relay:GrpcListen=127.0.0.1:{grpcPort}", $"--Relay:UiListen=127.0.0.1:{QueryBenchmark.FreePort()}",
            $"--Relay:TokenFile={tokenFile}", $"--Relay:UiDirectory={dir}", $"--ClickHouse:Url={clickHouseUrl}", .. settings,
        ];
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        return Process.Start(info) ?? throw new InvalidOperationException("could not start the relay");
    }

    private static async Task StopAsync(Process relay)
    {
        if (!relay.HasExited)
        {
            relay.Kill(); // SIGKILL: nothing of the run is needed any more
            await relay.WaitForExitAsync();
        }

        relay.Dispose();
    }

    private static async Task WaitForSchemaAsync(ClickHouseHttpClient ch, Process relay, string log)
    {
        var watch = Stopwatch.StartNew();
        while ((await ch.QueryTextAsync("SELECT count() FROM system.tables WHERE database = 'flowsec' AND name = 'stored_batches'")).Trim() != "1")
        {
            if (relay.HasExited || watch.Elapsed > TimeSpan.FromSeconds(60))
            {
                throw new InvalidOperationException("the relay did not create its tables:\n" + Tail(log));
            }

            await Task.Delay(100);
        }
    }

    private static async Task WaitForStoredAsync(ClickHouseHttpClient ch, long rows)
    {
        var watch = Stopwatch.StartNew();
        while (await StoredRowsAsync(ch) < rows && watch.Elapsed < TimeSpan.FromSeconds(30))
        {
            await Task.Delay(100);
        }
    }

    // From the parts' metadata: 18.16 answers count() by reading a column of every row.
    private static async Task<long> StoredRowsAsync(ClickHouseHttpClient ch) => long.Parse(
        (await ch.QueryTextAsync("SELECT sum(rows) FROM system.parts WHERE active AND database = 'flowsec' AND table = 'flows'")).Trim(),
        CultureInfo.InvariantCulture);

    private static long RssBytes(int pid)
    {
        var line = File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
    }

    // utime + stime of every thread, from /proc/PID/stat (clock ticks of 1/100 s).
    internal static double CpuSeconds(int pid) => CpuTicks(File.ReadAllText($"/proc/{pid}/stat")) / 100.0;

    // utime + stime of a /proc stat line (the fields after the parenthesized name).
    private static long CpuTicks(string stat)
    {
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
    }

    private static string Tail(string path) => File.Exists(path) ? string.Join('\n', File.ReadLines(path).TakeLast(30)) : "";

    // CPU of the server's background pool threads ("BackgrProcPool" in 18.16: merges, part clean-up),
    // summed over /proc/PID/task; the rest of the server's CPU is mostly the HTTP handlers running inserts.
    internal static double MergeCpuSeconds(int pid)
    {
        var ticks = 0L;
        foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            try
            {
                var stat = File.ReadAllText(Path.Combine(task, "stat"));
                if (stat.AsSpan(stat.IndexOf('(') + 1).StartsWith("BackgrProcPool", StringComparison.Ordinal))
                {
                    ticks += CpuTicks(stat);
                }
            }
            catch (IOException)
            {
                // the thread ended between listing and reading
            }
        }

        return ticks / 100.0;
    }

    private readonly record struct Sample(double Seconds, long Stored, long Acked, long RelayRss, double RelayCpu, double ClickHouseCpu, double ClickHouseMergeCpu,
        double DriverCpu, string Load);

    /// <summary>
    /// One sensor's export stream: its own HTTP/2 connection, a Push call with the token, batches
    /// written as gRPC frames of a small per-send prefix (node, batch id) and a shared pre-serialized
    /// body of events, at most <see cref="MaxUnackedBatches"/> unacked.
    /// </summary>
    private sealed class SimulatedSensor(string node, Uri relay, string token, byte[][] payloads, int batchEvents)
    {
        private readonly SemaphoreSlim _window = new(MaxUnackedBatches, MaxUnackedBatches);
        private readonly string _node = node;
        private readonly byte[][] _payloads = payloads;
        private readonly int _batchEvents = batchEvents;
        private long _sent;
        private long _acked;

        public long SentEvents => Interlocked.Read(ref _sent);

        public long AckedEvents => Interlocked.Read(ref _acked);

        public async Task RunAsync(CancellationToken stop)
        {
            using var http = new HttpClient(new SocketsHttpHandler()) { Timeout = Timeout.InfiniteTimeSpan };
            var content = new BatchStream(this, stop);
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(relay, "/" + RelayMethods.Push))
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
                Content = content,
            };
            request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, CancellationToken.None);
            if (response.StatusCode != HttpStatusCode.OK)
            {
                throw new InvalidOperationException($"Push answered HTTP {(int)response.StatusCode}");
            }

            var acks = await response.Content.ReadAsStreamAsync(CancellationToken.None);
            while (await GrpcFraming.ReadAsync(acks, IngestAck.Parser, CancellationToken.None) is { } ack)
            {
                Interlocked.Add(ref _acked, ack.Accepted);
                _window.Release();
            }

            var status = response.TrailingHeaders.TryGetValues("grpc-status", out var values) ? values.First() : "none";
            if (status != "0")
            {
                throw new InvalidOperationException($"Push of {_node} ended with grpc-status {status}");
            }
        }

        /// <summary>The request body: frames until the run stops, then the half-close once every batch is acked.</summary>
        private sealed class BatchStream : HttpContent
        {
            private readonly SimulatedSensor _sensor;
            private readonly CancellationToken _stop;

            public BatchStream(SimulatedSensor sensor, CancellationToken stop)
            {
                _sensor = sensor;
                _stop = stop;
                Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
            }

            protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
            {
                // gRPC frame header, then EventBatch field 1 (node) and field 2 (batch id, as a
                // 10-byte varint so it can be patched in place), then the events (field 3).
                var nodeBytes = Encoding.UTF8.GetBytes(_sensor._node);
                var prefix = new byte[5 + 2 + nodeBytes.Length + 11];
                prefix[5] = 0x0A;
                prefix[6] = (byte)nodeBytes.Length;
                nodeBytes.CopyTo(prefix, 7);
                var idAt = 7 + nodeBytes.Length;
                prefix[idAt] = 0x10;
                await stream.FlushAsync(); // HttpClient sends the HEADERS frame on the first flush
                var batchId = (ulong)Random.Shared.NextInt64(1, 1L << 40) << 16;
                for (var n = 0; ; n++)
                {
                    try
                    {
                        await _sensor._window.WaitAsync(_stop);
                    }
                    catch (OperationCanceledException)
                    {
                        break;
                    }

                    var payload = _sensor._payloads[n % _sensor._payloads.Length];
                    BinaryPrimitives.WriteUInt32BigEndian(prefix.AsSpan(1), (uint)(prefix.Length - 5 + payload.Length));
                    var id = ++batchId;
                    for (var i = 0; i < 10; i++, id >>= 7)
                    {
                        prefix[idAt + 1 + i] = (byte)((id & 0x7F) | (i < 9 ? 0x80u : 0));
                    }

                    await stream.WriteAsync(prefix);
                    await stream.WriteAsync(payload);
                    await stream.FlushAsync();
                    Interlocked.Add(ref _sensor._sent, _sensor._batchEvents);
                }

                // As the sensor does on shutdown: wait for the acks of what was sent, then half-close.
                for (var i = 0; i < MaxUnackedBatches; i++)
                {
                    await _sensor._window.WaitAsync(TimeSpan.FromSeconds(60));
                }
            }

            protected override bool TryComputeLength(out long length)
            {
                length = -1;
                return false;
            }
        }
    }
}
