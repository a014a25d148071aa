using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FlowSec.Benchmarks;

/// <summary>
/// What the sensor costs a busy node: nginx in one network-namespace "pod", wrk in another, with
/// (a) nothing attached, (b) empty programs on the same hooks (the floor), (c) the full sensor,
/// alternated round by round so drift hits all three alike; with Connection: close (a new TCP
/// connection per request, the worst case for a flow tracer) and with keep-alive. The sensor
/// streams to an in-process ingest endpoint that acks and counts, so the figure is the node's
/// cost, not the relay's or ClickHouse's (which run elsewhere in a cluster).
/// </summary>
internal static partial class OverheadBenchmark
{
    private const string Server = "fsbsrv";
    private const string Client = "fsbcli";
    private const string ServerIp = "10.251.0.1";

    /// <summary>
    /// Runs the comparison; <paramref name="sensorPath"/> is the sensor to measure: a FlowSec.Sensor.dll
    /// (run on the .NET runtime) or the native executable (scripts/build-native-sensor.sh); default
    /// the runtime build next to this benchmark.
    /// </summary>
    public static async Task<int> RunAsync(int rounds, int seconds, string? sensorPath = null)
    {
        var (work, sensorDll) = Prepare(sensorPath);
        long flowsReceived = 0;
        var (sink, sinkPort) = await StartSinkAsync(() => Interlocked.Increment(ref flowsReceived), work);
        await using var _ = sink;
        try
        {
            await SetUpAsync(work);
            Console.WriteLine("  warm-up (not counted):");
            // One unmeasured sensor round first: this process (the sink) runs on the JIT, and its
            // tiered compiler would otherwise take a core's share from round 1's "sensor" config only.
            await MeasureAsync("close", "sensor", seconds, sensorDll, sinkPort, work, () => Interlocked.Read(ref flowsReceived));
            var flowsBeforeRounds = Interlocked.Read(ref flowsReceived);
            var results = new Dictionary<(string Mode, string Config), List<double>>();
            long requestsWithSensor = 0;
            foreach (var mode in new[] { "close", "keepalive" })
            {
                for (var round = 0; round < rounds; round++)
                {
                    foreach (var config in new[] { "none", "floor", "sensor" })
                    {
                        var (rps, requests) = await MeasureAsync(mode, config, seconds, sensorDll, sinkPort, work,
                            () => Interlocked.Read(ref flowsReceived));
                        results.TryAdd((mode, config), []);
                        results[(mode, config)].Add(rps);
                        if (config == "sensor" && mode == "close")
                        {
                            requestsWithSensor += requests;
                        }
                        Console.WriteLine($"  {mode,-9} round {round + 1} {config,-6} {rps,10:0} req/s");
                    }
                }
            }
            Console.WriteLine();
            foreach (var mode in new[] { "close", "keepalive" })
            {
                var none = Quartiles(results[(mode, "none")]).Median;
                var floor = Quartiles(results[(mode, "floor")]).Median;
                var sensor = Quartiles(results[(mode, "sensor")]).Median;
                var floorLoss = 1 - floor / none;
                var sensorLoss = 1 - sensor / none;
                Console.WriteLine($"{mode}: medians none {none:0} req/s, floor {floor:0} ({floorLoss:P1} loss), sensor {sensor:0} ({sensorLoss:P1} loss); " +
                                  $"sensor/floor loss ratio {(floorLoss > 0 ? (sensorLoss / floorLoss).ToString("0.00", CultureInfo.InvariantCulture) : "n/a")}");
                var paired = PairedLossRatios(results[(mode, "none")], results[(mode, "floor")], results[(mode, "sensor")]);
                var (q1, median, q3) = Quartiles(paired.Where(double.IsFinite));
                Console.WriteLine($"{mode}: paired ratios per round (each round's none, floor, sensor back to back) " +
                                  string.Join(", ", paired.Select(r => double.IsFinite(r) ? r.ToString("0.00", CultureInfo.InvariantCulture) : "n/a")) +
                                  $"; median {median:0.00}, inter-quartile range {q1:0.00}-{q3:0.00}");
                // A round whose floor lost little makes its ratio explode (or flip sign): the median
                // of each configuration's paired losses, and their ratio, stay defined.
                var (floorQ1, floorMedian, floorQ3) = Quartiles(PairedLosses(results[(mode, "none")], results[(mode, "floor")]));
                var (sensorQ1, sensorMedian, sensorQ3) = Quartiles(PairedLosses(results[(mode, "none")], results[(mode, "sensor")]));
                Console.WriteLine($"{mode}: paired losses (each against its round's none) floor median {floorMedian:P1} (IQR {floorQ1:P1} to {floorQ3:P1}), " +
                                  $"sensor median {sensorMedian:P1} (IQR {sensorQ1:P1} to {sensorQ3:P1}); ratio of these medians " +
                                  (floorMedian > 0 ? (sensorMedian / floorMedian).ToString("0.00", CultureInfo.InvariantCulture) : "n/a"));
            }
            Console.WriteLine($"lost events: requests with Connection: close under the sensor {requestsWithSensor}, client-side flows received {Interlocked.Read(ref flowsReceived) - flowsBeforeRounds}" +
                              " (each request is one connection; flows also include connections wrk had open when time ran out)");
            return 0;
        }
        finally
        {
            await TearDownAsync();
            Directory.Delete(work, recursive: true);
        }
    }

    // A scratch directory, and the sensor to run: the given build, else the runtime build next to this benchmark.
    private static (string Work, string SensorDll) Prepare(string? sensorPath)
    {
        var sensorDll = Path.GetFullPath(sensorPath ?? Path.Combine(AppContext.BaseDirectory, "FlowSec.Sensor.dll"));
        Console.WriteLine($"sensor: {sensorDll}");
        return (Directory.CreateTempSubdirectory("flowsec-overhead-").FullName, sensorDll);
    }

    /// <summary>
    /// Attribution (no comparison): the full sensor alone, one wrk run per workload with
    /// <c>kernel.bpf_stats_enabled=1</c>, then per BPF program its runs per request and ns per run
    /// (<c>bpftool prog show</c> deltas), and the sensor process's CPU time per request
    /// (<c>/proc/PID/stat</c>). Steadier than request rates on a shared machine.
    /// </summary>
    public static async Task<int> ProfileAsync(int seconds, string? sensorPath = null)
    {
        var (work, sensorDll) = Prepare(sensorPath);
        long flowsReceived = 0;
        var (sink, sinkPort) = await StartSinkAsync(() => Interlocked.Increment(ref flowsReceived), work);
        await using var _ = sink;
        var statsBefore = (await Sh("sysctl -n kernel.bpf_stats_enabled")).Trim();
        Process? sensor = null;
        try
        {
            await SetUpAsync(work);
            await Sh("sysctl -qw kernel.bpf_stats_enabled=1");
            // bpftool here does not name the holding process: the sensor's programs are those that appear with it.
            var existing = (await ProgramStatsAsync()).Keys.ToHashSet();
            sensor = StartSensor(sensorDll, sinkPort, work);
            await WaitForSensorAsync(sensor);
            // Fixed now: programs someone else loads during the runs (another sensor) are not counted.
            var ours = (await ProgramStatsAsync()).Keys.Where(id => !existing.Contains(id)).ToHashSet();
            foreach (var mode in new[] { "close", "keepalive" })
            {
                await RunAsync("ip", ["netns", "exec", Client, "wrk", "-t1", "-c32", "-d3s", $"http://{ServerIp}:8080/"]);
                var progsBefore = await ProgramStatsAsync();
                var cpuBefore = ProcessCpuTicks(sensor.Id);
                var threadsBefore = ThreadCpuTicks(sensor.Id);
                var switchesBefore = ContextSwitches(sensor.Id);
                var benchBefore = Process.GetCurrentProcess().TotalProcessorTime;
                var jitBefore = ThreadCpuTicksById(Environment.ProcessId, JitThread);
                var flowsBefore = Interlocked.Read(ref flowsReceived);
                var wall = Stopwatch.StartNew();
                var output = await RunAsync("ip", WrkArgs(mode, seconds));
                var elapsed = wall.Elapsed.TotalSeconds;
                var progsAfter = await ProgramStatsAsync();
                var cpuAfter = ProcessCpuTicks(sensor.Id);
                var threadsAfter = ThreadCpuTicks(sensor.Id);
                var switchesAfter = ContextSwitches(sensor.Id);
                var benchCpu = Process.GetCurrentProcess().TotalProcessorTime - benchBefore;
                // By thread id: the runtime ends an idle JIT thread and starts another under the same name.
                var benchJitMs = ThreadCpuTicksById(Environment.ProcessId, JitThread).Sum(t => t.Value - jitBefore.GetValueOrDefault(t.Key)) * 10;
                var requests = long.Parse(RequestCount().Match(output).Groups[1].Value, CultureInfo.InvariantCulture);
                var rps = double.Parse(RequestsPerSecond().Match(output).Groups[1].Value, CultureInfo.InvariantCulture);
                sensor.Refresh();
                var cpuSeconds = (cpuAfter - cpuBefore) / 100.0; // USER_HZ
                Console.WriteLine();
                Console.WriteLine($"{mode}: {rps:0} req/s, {requests} requests; sensor CPU {cpuSeconds / elapsed:P1} of a core, " +
                                  $"{cpuSeconds * 1e6 / requests:0.00} us per request, {(double)(switchesAfter - switchesBefore) / requests:0.00} context switches per request " +
                                  $"(a load-independent count of its wake-ups), RSS {sensor.WorkingSet64 / 1048576} MB");
                // The in-process sink (parse, count, ack) shares the machine with the sensor: its CPU
                // is taken from nginx and wrk too, though in a cluster the relay runs elsewhere.
                // The benchmark runs on the JIT: while it is young, most of that CPU is its tiered
                // compiler, a one-time cost, reported apart from what the sink does per batch.
                var sinkUs = benchCpu.TotalMicroseconds - benchJitMs * 1000.0;
                Console.WriteLine($"benchmark process (the relay sink) CPU {benchCpu.TotalSeconds / elapsed:P1} of a core, " +
                                  $"{benchCpu.TotalMicroseconds / requests:0.00} us per request, of which its JIT compiler thread {benchJitMs * 1000.0 / requests:0.00}, " +
                                  $"the rest (receive, scan, ack) {sinkUs / requests:0.00}");
                Console.WriteLine($"| program | runs/request | ns/run | ns/request | runs/s |");
                Console.WriteLine($"|---|---|---|---|---|");
                double total = 0;
                foreach (var (id, after) in progsAfter.OrderByDescending(p => p.Value.TimeNs - progsBefore.GetValueOrDefault(p.Key).TimeNs))
                {
                    var before = progsBefore.GetValueOrDefault(id);
                    var runs = after.Runs - before.Runs;
                    if (runs <= 0 || !ours.Contains(id))
                    {
                        continue;
                    }
                    var ns = after.TimeNs - before.TimeNs;
                    total += (double)ns / requests;
                    Console.WriteLine($"| {after.Name} | {(double)runs / requests:0.00} | {(double)ns / runs:0} | {(double)ns / requests:0} | {runs / elapsed:0} |");
                }
                Console.WriteLine($"| all | | | {total:0} | |");
                Console.WriteLine("sensor threads (CPU ms during the run): " + string.Join(", ", threadsAfter
                    .Select(t => (t.Key, Ticks: t.Value - threadsBefore.GetValueOrDefault(t.Key)))
                    .Where(t => t.Ticks > 0).OrderByDescending(t => t.Ticks).Select(t => $"{t.Key} {t.Ticks * 10}")));
                Console.WriteLine($"client-side flows received during the run: {Interlocked.Read(ref flowsReceived) - flowsBefore}");
            }
            Console.WriteLine($"client-side flows received: {Interlocked.Read(ref flowsReceived)}");
            await Task.Delay(3000); // one more status batch
            var losses = (LastCounters ?? []).Where(c => LossCounter().IsMatch(c.Key)).OrderBy(c => c.Key).ToList();
            Console.WriteLine("loss counters: " + (losses.Count == 0 ? "none reported" : string.Join(", ", losses.Select(c => $"{c.Key}={c.Value}"))));
            return 0;
        }
        finally
        {
            if (sensor is not null)
            {
                sensor.Kill();
                await sensor.WaitForExitAsync();
            }
            await Sh($"sysctl -qw kernel.bpf_stats_enabled={statsBefore}");
            await TearDownAsync();
            Directory.Delete(work, recursive: true);
        }
    }

    // The runtime's tiered-compilation thread, as /proc names it (15 characters at most).
    private const string JitThread = ".NET Tiered Com";

    private static List<string> WrkArgs(string mode, int seconds)
    {
        var args = new List<string> { "netns", "exec", Client, "wrk", "-t1", "-c32", $"-d{seconds}s" };
        if (mode == "close")
        {
            args.AddRange(["-H", "Connection: close"]);
        }
        args.Add($"http://{ServerIp}:8080/");
        return args;
    }

    private static Process StartSensor(string sensorDll, int sinkPort, string work)
    {
        var native = !sensorDll.EndsWith(".dll", StringComparison.Ordinal);
        return Process.Start(new ProcessStartInfo(native ? sensorDll : "dotnet",
        [
            .. native ? Array.Empty<string>() : [sensorDll], $"--Sensor:Relay=http://127.0.0.1:{sinkPort}", $"--Sensor:TokenFile={Path.Combine(work, "token")}",
            "--Sensor:Node=bench", $"--Sensor:MetricsListen=127.0.0.1:{FreePort()}", "--Logging:LogLevel:Default=Warning",
        ])
        { RedirectStandardOutput = true, RedirectStandardError = true })!;
    }

    /// <summary>utime + stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat).</summary>
    private static long ProcessCpuTicks(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
    }

    /// <summary>CPU ticks of a process's threads, summed by thread name.</summary>
    private static Dictionary<string, long> ThreadCpuTicks(int pid)
    {
        var result = new Dictionary<string, long>();
        foreach (var (_, name, ticks) in Threads(pid))
        {
            result[name] = result.GetValueOrDefault(name) + ticks;
        }
        return result;
    }

    /// <summary>CPU ticks of each live thread of a process named <paramref name="name"/>, by thread id.</summary>
    private static Dictionary<int, long> ThreadCpuTicksById(int pid, string name) =>
        Threads(pid).Where(t => t.Name == name).ToDictionary(t => t.Id, t => t.Ticks);

    /// <summary>Each live thread of a process: id, name and utime + stime in clock ticks.</summary>
    private static List<(int Id, string Name, long Ticks)> Threads(int pid)
    {
        var result = new List<(int, string, long)>();
        foreach (var dir in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var name = stat[(stat.IndexOf('(') + 1)..stat.LastIndexOf(')')];
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                result.Add((int.Parse(Path.GetFileName(dir), CultureInfo.InvariantCulture), name,
                    long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)));
            }
            catch (IOException)
            {
                // The thread ended meanwhile.
            }
        }
        return result;
    }

    /// <summary>Voluntary and involuntary context switches of all of a process's threads.</summary>
    private static long ContextSwitches(int pid)
    {
        long total = 0;
        foreach (var dir in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            try
            {
                foreach (var line in File.ReadLines(Path.Combine(dir, "status")))
                {
                    if (line.StartsWith("voluntary_ctxt_switches:", StringComparison.Ordinal) || line.StartsWith("nonvoluntary_ctxt_switches:", StringComparison.Ordinal))
                    {
                        total += long.Parse(line[(line.IndexOf(':') + 1)..].Trim(), CultureInfo.InvariantCulture);
                    }
                }
            }
            catch (IOException)
            {
                // The thread ended meanwhile.
            }
        }
        return total;
    }

    private readonly record struct ProgramStats(string Name, long Runs, long TimeNs);

    /// <summary>Every loaded BPF program's run count and run time.</summary>
    private static async Task<Dictionary<long, ProgramStats>> ProgramStatsAsync()
    {
        using var doc = System.Text.Json.JsonDocument.Parse(await RunAsync("bpftool", ["prog", "show", "-j"]));
        var result = new Dictionary<long, ProgramStats>();
        foreach (var p in doc.RootElement.EnumerateArray())
        {
            result[p.GetProperty("id").GetInt64()] = new ProgramStats(
                p.TryGetProperty("name", out var name) ? name.GetString() ?? "" : "",
                p.TryGetProperty("run_cnt", out var cnt) ? cnt.GetInt64() : 0,
                p.TryGetProperty("run_time_ns", out var ns) ? ns.GetInt64() : 0);
        }
        return result;
    }

    private static async Task<(double Rps, long Requests)> MeasureAsync(string mode, string config, int seconds, string sensorDll,
        int sinkPort, string work, Func<long> flowsSoFar)
    {
        BpfObject? floor = null;
        CgroupSkbObject? floorCgroup = null;
        Process? sensor = null;
        try
        {
            if (config == "floor")
            {
                floor = BpfObject.LoadEmbedded("bpf/empty_hooks.bpf.o", NullLogger.Instance);
                floorCgroup = CgroupSkbObject.LoadEmbedded("bpf/empty_cgroup_skb.bpf.o", CgroupV2.MountPoint() ?? throw new InvalidOperationException("no cgroup v2 mount"),
                    new Dictionary<string, uint>(), NullLogger.Instance);
                var failed = floor.Programs.Concat(floorCgroup.Programs).Where(p => !p.Attached).Select(p => p.Name + ": " + p.Error).ToList();
                if (failed.Count > 0)
                {
                    throw new InvalidOperationException("floor programs failed to attach: " + string.Join("; ", failed));
                }
            }
            else if (config == "sensor")
            {
                sensor = StartSensor(sensorDll, sinkPort, work);
                await WaitForSensorAsync(sensor);
            }
            // Three seconds of load first, in every configuration alike: JIT and caches warm up outside the measurement.
            await RunAsync("ip", ["netns", "exec", Client, "wrk", "-t1", "-c32", "-d3s", $"http://{ServerIp}:8080/"]);
            var args = WrkArgs(mode, seconds);
            var cpuBefore = sensor?.TotalProcessorTime ?? TimeSpan.Zero;
            var wall = Stopwatch.StartNew();
            var output = await RunAsync("ip", args);
            if (sensor is not null)
            {
                sensor.Refresh();
                Console.WriteLine($"    sensor CPU during the run: {(sensor.TotalProcessorTime - cpuBefore) / wall.Elapsed:P0} of one core, RSS {sensor.WorkingSet64 / 1048576} MB");
            }
            var rps = double.Parse(RequestsPerSecond().Match(output).Groups[1].Value, CultureInfo.InvariantCulture);
            var requests = long.Parse(RequestCount().Match(output).Groups[1].Value, CultureInfo.InvariantCulture);
            return (rps, requests);
        }
        finally
        {
            floor?.Dispose();
            floorCgroup?.Dispose();
            if (sensor is not null)
            {
                // Let the sensor deliver what it captured before it goes: flows stop arriving.
                var last = -1L;
                for (var i = 0; i < 20 && flowsSoFar() != last; i++)
                {
                    last = flowsSoFar();
                    await Task.Delay(500);
                }
                sensor.Kill();
                await sensor.WaitForExitAsync();
            }
        }
    }

    private static readonly SemaphoreSlim SensorReady = new(0);

    /// <summary>The counters of the latest status the sensor sent.</summary>
    private static volatile Dictionary<string, ulong>? LastCounters;

    private static async Task WaitForSensorAsync(Process sensor)
    {
        // The sink releases the semaphore on the first batch: the sensor is attached and streaming.
        while (SensorReady.CurrentCount > 0)
        {
            await SensorReady.WaitAsync();
        }
        if (!await SensorReady.WaitAsync(TimeSpan.FromSeconds(30)))
        {
            // Stop it first: its stderr ends only when it exits.
            sensor.Kill();
            throw new TimeoutException("sensor did not connect: " + await sensor.StandardError.ReadToEndAsync());
        }
    }

    private static async Task<(WebApplication App, int Port)> StartSinkAsync(Action onClientFlow, string work)
    {
        var token = TokenFile.ReadOrCreate(Path.Combine(work, "token"));
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(new TokenAuthenticator(token));
        var port = FreePort();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port, o => o.Protocols = HttpProtocols.Http2));
        var app = builder.Build();
        app.MapGrpcDuplex<CountedBatch, IngestAck>(RelayMethods.Push, CountedBatch.Parser, async (batches, acks, _) =>
        {
            var first = true;
            await foreach (var batch in batches)
            {
                for (var i = 0; i < batch.ClientFlows; i++)
                {
                    onClientFlow();
                }
                if (batch.Status is { } status)
                {
                    LastCounters = new Dictionary<string, ulong>(status.Counters);
                }
                if (first)
                {
                    SensorReady.Release();
                    first = false;
                }
                await acks.WriteAsync(new IngestAck { BatchId = batch.BatchId, Accepted = (uint)batch.Events });
            }
        });
        await app.StartAsync();
        return (app, port);
    }

    private static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private static async Task SetUpAsync(string work)
    {
        await TearDownAsync();
        await Sh($"ip netns add {Server} && ip netns add {Client}");
        await Sh($"ip link add fsb0 type veth peer name fsb1 && ip link set fsb0 netns {Server} && ip link set fsb1 netns {Client}");
        await Sh($"ip -n {Server} addr add {ServerIp}/24 dev fsb0 && ip -n {Server} link set fsb0 up && ip -n {Server} link set lo up");
        await Sh($"ip -n {Client} addr add 10.251.0.2/24 dev fsb1 && ip -n {Client} link set fsb1 up && ip -n {Client} link set lo up");
        var conf = Path.Combine(work, "nginx.conf");
        await File.WriteAllTextAsync(conf, $$"""
            worker_processes 1;
            pid {{work}}/nginx.pid;
            error_log {{work}}/nginx-error.log;
            events { worker_connections 4096; }
            http {
              access_log off;
              client_body_temp_path {{work}}; proxy_temp_path {{work}}; fastcgi_temp_path {{work}}; uwsgi_temp_path {{work}}; scgi_temp_path {{work}};
              server { listen {{ServerIp}}:8080; location / { return 200 "ok\n"; } }
            }
            """);
        await Sh($"ip netns exec {Server} nginx -c {conf}");
        await RunAsync("ip", ["netns", "exec", Client, "curl", "-sf", $"http://{ServerIp}:8080/"]);
    }

    private static async Task TearDownAsync()
    {
        foreach (var ns in new[] { Server, Client })
        {
            await Sh($"for p in $(ip netns pids {ns} 2>/dev/null); do kill -9 $p; done; ip netns del {ns} 2>/dev/null; true");
        }
    }

    private static Task<string> Sh(string command) => RunAsync("sh", ["-c", command]);

    private static async Task<string> RunAsync(string file, IEnumerable<string> args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        return p.ExitCode == 0 ? await stdout : throw new InvalidOperationException($"{file} {string.Join(' ', args)}: {await stderr}");
    }

    /// <summary>
    /// Per round r, (1 − sensor_r/none_r) / (1 − floor_r/none_r): the sensor's loss over the
    /// floor's, both against the "none" run of the same round. The three ran back to back, so a
    /// slow phase of the machine (another engineer's build) hits all three of one round; medians
    /// per configuration pair a slow round's "none" with another round's "floor". NaN for a round
    /// whose floor lost nothing (or gained): no ratio.
    /// </summary>
    internal static List<double> PairedLossRatios(List<double> none, List<double> floor, List<double> sensor)
    {
        return PairedLosses(none, sensor).Zip(PairedLosses(none, floor), (sensorLoss, floorLoss) => floorLoss > 0 ? sensorLoss / floorLoss : double.NaN).ToList();
    }

    /// <summary>Per round, 1 − config_r/none_r: the configuration's loss against the "none" run of the same round.</summary>
    internal static IEnumerable<double> PairedLosses(List<double> none, List<double> config) =>
        none.Zip(config, (n, c) => 1 - c / n);

    /// <summary>First quartile, median and third quartile (linear interpolation between ranks, as R's type 7); NaN when empty.</summary>
    internal static (double Q1, double Median, double Q3) Quartiles(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        double At(double q)
        {
            if (sorted.Length == 0)
            {
                return double.NaN;
            }
            var position = q * (sorted.Length - 1);
            var below = (int)Math.Floor(position);
            var above = Math.Min(below + 1, sorted.Length - 1);
            return sorted[below] + (sorted[above] - sorted[below]) * (position - below);
        }
        return (At(0.25), At(0.5), At(0.75));
    }

    [GeneratedRegex(@"Requests/sec:\s+([\d.]+)")]
    private static partial Regex RequestsPerSecond();

    [GeneratedRegex(@"dropped|lost|failed|full|errors|malformed")]
    private static partial Regex LossCounter();

    [GeneratedRegex(@"(\d+) requests in")]
    private static partial Regex RequestCount();
}
