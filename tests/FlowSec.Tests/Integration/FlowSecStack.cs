using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Integration;

/// <summary>
/// The whole product running for real, as `flowsec up` runs it: a managed ClickHouse, the relay
/// and the sensor as separate processes on free loopback ports, in a temporary state directory.
/// Shared by the tests of the "stack" collection.
/// </summary>
public sealed class FlowSecStack : IAsyncLifetime
{
    /// <summary>The node name the sensor reports.</summary>
    public const string Node = "test-node";

    private ManagedClickHouse? _clickHouse;
    private ChildProcess? _relay;
    private ChildProcess? _sensor;

    /// <summary>The temporary state directory.</summary>
    public string Dir { get; } = Directory.CreateTempSubdirectory("flowsec-stack-").FullName;

    /// <summary>The bearer token file.</summary>
    public string TokenFilePath => Path.Combine(Dir, "token");

    /// <summary>The relay's gRPC port.</summary>
    public int GrpcPort { get; } = FreePort();

    /// <summary>The relay's UI port.</summary>
    public int UiPort { get; } = FreePort();

    /// <summary>The sensor's Prometheus port.</summary>
    public int MetricsPort { get; } = FreePort();

    /// <summary>The web UI's URL.</summary>
    public string UiUrl => $"http://127.0.0.1:{UiPort}/";

    /// <summary>The relay's gRPC address.</summary>
    public Uri RelayAddress => new($"http://127.0.0.1:{GrpcPort}");

    /// <summary>The managed ClickHouse.</summary>
    public ManagedClickHouse ClickHouse => _clickHouse ?? throw new InvalidOperationException("not started");

    /// <summary>An authenticated client for the relay.</summary>
    public GrpcClient Client { get; private set; } = null!;

    /// <summary>The token.</summary>
    public string Token { get; private set; } = "";

    /// <inheritdoc />
    public async Task InitializeAsync()
    {
        Token = TokenFile.ReadOrCreate(TokenFilePath);
        _clickHouse = await ManagedClickHouse.StartAsync(Path.Combine(Dir, "clickhouse"), FreePort(), FreePort(), CancellationToken.None);
        _relay = StartRelay("relay", GrpcPort, UiPort);
        Client = new GrpcClient(RelayAddress, Token);
        await WaitForStatusAsync(s => s.StorageOk, _relay, "relay with storage");
        _sensor = StartSensor("sensor", RelayAddress, Node, MetricsPort);
        await WaitForStatusAsync(s => s.Nodes.Any(n => n.Node == Node && n.Connected && n.Sensor is not null &&
                                                      n.Sensor.Capture.Any(c => c.State == "active")), _sensor, "sensor");
    }

    /// <summary>The repository root (where FlowSec.sln is), recorded at build time.</summary>
    public static string RepoRoot { get; } = typeof(FlowSecStack).Assembly
        .GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
        .Cast<System.Reflection.AssemblyMetadataAttribute>()
        .Single(a => a.Key == "RepoRoot").Value!.TrimEnd('/');

    /// <summary>
    /// Starts a relay process on this stack's ClickHouse (or <paramref name="clickHouseUrl"/>) and
    /// token (a second relay is as good as the first).
    /// </summary>
    public ChildProcess StartRelay(string name, int grpcPort, int uiPort, string? clickHouseUrl = null) =>
        StartRelay(name, grpcPort, uiPort, TokenFilePath, clickHouseUrl ?? ClickHouse.Url, Dir);

    /// <summary>Starts a relay process on any ClickHouse, logging to <paramref name="dir"/>; <paramref name="settings"/> are extra <c>--Section:Key=value</c> arguments.</summary>
    public static ChildProcess StartRelay(string name, int grpcPort, int uiPort, string tokenFile, string clickHouseUrl, string dir, params string[] settings) =>
        ChildProcess.Start(name, "dotnet",
        [
            Path.Combine(AppContext.BaseDirectory, "FlowSec.Relay.dll"),
            $"--Relay:GrpcListen=127.0.0.1:{grpcPort}", $"--Relay:UiListen=127.0.0.1:{uiPort}",
            $"--Relay:TokenFile={tokenFile}", $"--Relay:UiDirectory={Path.Combine(RepoRoot, "ui")}",
            $"--ClickHouse:Url={clickHouseUrl}", .. settings,
        ], Path.Combine(dir, name + ".log"));

    /// <summary>Starts a sensor process with this stack's token, streaming to <paramref name="relay"/> as <paramref name="node"/>.</summary>
    public ChildProcess StartSensor(string name, Uri relay, string node, int metricsPort, params string[] settings) =>
        StartSensor(name, ["dotnet", Path.Combine(AppContext.BaseDirectory, "FlowSec.Sensor.dll")], relay, node, metricsPort, settings);

    /// <summary>The ahead-of-time compiled sensor that scripts/test.sh publishes (scripts/build-native-sensor.sh).</summary>
    public static string NativeSensorPath => Path.Combine(RepoRoot, "artifacts", "sensor-native", "FlowSec.Sensor");

    /// <summary>Like <see cref="StartSensor(string, Uri, string, int, string[])"/>, with the native sensor `flowsec up` runs.</summary>
    public ChildProcess StartNativeSensor(string name, Uri relay, string node, int metricsPort, params string[] settings) =>
        StartSensor(name, [File.Exists(NativeSensorPath) ? NativeSensorPath
            : throw new FileNotFoundException("no native sensor: run scripts/build-native-sensor.sh", NativeSensorPath)], relay, node, metricsPort, settings);

    private ChildProcess StartSensor(string name, string[] command, Uri relay, string node, int metricsPort, string[] settings) =>
        ChildProcess.Start(name, command[0],
        [
            .. command[1..],
            $"--Sensor:Relay={relay}", $"--Sensor:TokenFile={TokenFilePath}", $"--Sensor:Node={node}",
            "--Sensor:BatchMaxDelay=00:00:00.050", $"--Sensor:MetricsListen=127.0.0.1:{metricsPort}", .. settings,
        ], Path.Combine(Dir, name + ".log"));

    /// <summary>
    /// Starts a sensor named <paramref name="node"/> with a spool directory of its own (kept across
    /// restarts of the same node), streaming to <paramref name="relay"/> (default: this stack's
    /// relay, or the one <paramref name="relayClient"/> talks to), and waits until its TCP capture
    /// is active there.
    /// </summary>
    public async Task<ChildProcess> StartSpoolingSensorAsync(string node, Uri? relay = null, GrpcClient? relayClient = null)
    {
        var sensor = StartSensor(node, relay ?? RelayAddress, node, FreePort(), $"--Sensor:SpoolDirectory={Path.Combine(Dir, node + "-spool")}");
        await WaitForStatusAsync(s => s.Nodes.Any(n => n.Node == node && n.Connected && n.Sensor is not null &&
                                                       n.Sensor.Capture.Any(c => c.Signal == "tcp" && c.State == "active")),
            sensor, "sensor " + node, relayClient);
        return sensor;
    }

    /// <summary>Waits until <paramref name="node"/> reports no unacked batch and an empty spool: everything it sent is stored.</summary>
    public Task WaitUntilSensorHoldsNothingAsync(string node, ChildProcess sensor, GrpcClient? relayClient = null) =>
        Eventually.HoldsAsync(async () =>
        {
            sensor.Exited.IsCompleted.Should().BeFalse(sensor.Tail(30));
            var n = (await StatusAsync(relayClient)).Nodes.SingleOrDefault(n => n.Node == node);
            return n?.Sensor?.Counters is { } c && c.GetValueOrDefault("export_unacked_batches") == 0 && c.GetValueOrDefault("spool_batches") == 0;
        }, TimeSpan.FromSeconds(120), () => $"sensor {node} still holds batches\n{sensor.Tail(30)}");

    /// <summary>Relay status, from this stack's relay or the one <paramref name="client"/> talks to.</summary>
    public Task<StatusResponse> StatusAsync(GrpcClient? client = null) =>
        (client ?? Client).UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser, CancellationToken.None, TimeSpan.FromSeconds(5));

    /// <summary>The sensor's log so far, for failure messages.</summary>
    public string SensorLog => _sensor?.Tail(40) ?? "";

    /// <summary>The relay's log so far, for failure messages.</summary>
    public string RelayLog => _relay?.Tail(40) ?? "";

    /// <summary>Every event stored (read through the relay's observer API) from <paramref name="node"/> since <paramref name="since"/>.</summary>
    public async Task<List<Event>> StoredEventsAsync(string node, DateTimeOffset since)
    {
        var request = new GetEventsRequest { SinceUnixNano = (ulong)since.ToUnixTimeMilliseconds() * 1_000_000 };
        request.Allow.Add(new EventFilter { Node = { node } });
        var events = new List<Event>();
        await foreach (var e in Client.ServerStreamingAsync(RelayMethods.GetEvents, request, Event.Parser, CancellationToken.None))
        {
            events.Add(e);
        }
        return events;
    }

    /// <summary>
    /// Polls stored events (through the relay's observer API, i.e. from ClickHouse) until one
    /// matches, or fails after <paramref name="timeout"/> with the logs attached.
    /// </summary>
    public async Task<Event> WaitForStoredEventAsync(Func<Event, bool> match, TimeSpan timeout, DateTimeOffset since)
    {
        var watch = Stopwatch.StartNew();
        var seen = 0;
        while (watch.Elapsed < timeout)
        {
            var request = new GetEventsRequest { SinceUnixNano = (ulong)since.ToUnixTimeMilliseconds() * 1_000_000 };
            seen = 0;
            await foreach (var e in Client.ServerStreamingAsync(RelayMethods.GetEvents, request, Event.Parser, CancellationToken.None))
            {
                seen++;
                if (match(e))
                {
                    return e;
                }
            }
            await Task.Delay(100);
        }
        throw new TimeoutException($"no matching stored event within {timeout} ({seen} events seen)\n--- sensor log\n{SensorLog}\n--- relay log\n{RelayLog}");
    }

    /// <summary>
    /// Polls the status of this stack's relay (or the one <paramref name="client"/> talks to) until
    /// <paramref name="ready"/> holds; fails if <paramref name="child"/> exits or after 60 s.
    /// </summary>
    public Task WaitForStatusAsync(Func<StatusResponse, bool> ready, ChildProcess child, string what, GrpcClient? client = null) =>
        WaitForStatusAsync(() => StatusAsync(client), ready, child, what);

    /// <summary>Polls <paramref name="status"/> until <paramref name="ready"/> holds (60 s), failing early with the log if <paramref name="child"/> exits.</summary>
    public static async Task WaitForStatusAsync(Func<Task<StatusResponse>> status, Func<StatusResponse, bool> ready, ChildProcess child, string what)
    {
        var watch = Stopwatch.StartNew();
        var last = "";
        while (watch.Elapsed < TimeSpan.FromSeconds(60))
        {
            if (child.Exited.IsCompleted)
            {
                throw new InvalidOperationException($"{what} exited ({child.ExitCode}):\n{child.Tail(40)}");
            }
            try
            {
                if (ready(await status()))
                {
                    return;
                }
            }
            catch (GrpcException ex)
            {
                last = ex.Message;
            }
            await Task.Delay(100);
        }
        throw new TimeoutException($"{what} not ready within 60 s ({last}):\n{child.Tail(40)}");
    }

    /// <summary>A free loopback TCP port.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <inheritdoc />
    public async Task DisposeAsync()
    {
        Client?.Dispose();
        if (_sensor is not null)
        {
            await _sensor.DisposeAsync();
        }
        if (_relay is not null)
        {
            await _relay.DisposeAsync();
        }
        if (_clickHouse is not null)
        {
            await _clickHouse.DisposeAsync();
        }
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Tests that share one running FlowSec stack; they run one after another.</summary>
[CollectionDefinition(Name)]
public sealed class StackCollection : ICollectionFixture<FlowSecStack>
{
    /// <summary>The collection name.</summary>
    public const string Name = "stack";
}
