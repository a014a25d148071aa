using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Integration;

/// <summary>
/// A real relay process on a real ClickHouse, without a sensor: tests push exactly the events they
/// want through the relay's ingest API (as a sensor does) and read them back with the CLI.
/// </summary>
public sealed class IngestRelay : IAsyncLifetime
{
    private readonly ClickHouseServer _clickHouse = new();
    private ChildProcess? _relay;

    /// <summary>The temporary directory (token, logs).</summary>
    public string Dir { get; } = Directory.CreateTempSubdirectory("flowsec-ingest-relay-").FullName;

    /// <summary>The bearer token file.</summary>
    public string TokenFilePath => Path.Combine(Dir, "token");

    /// <summary>The relay's gRPC address.</summary>
    public Uri RelayAddress { get; } = new($"http://127.0.0.1:{FlowSecStack.FreePort()}");

    /// <summary>An authenticated client for the relay.</summary>
    public GrpcClient Client { get; private set; } = null!;

    /// <summary>The relay's UI port (HTTP: <c>/metrics</c>, the web UI).</summary>
    public Uri UiAddress { get; } = new($"http://127.0.0.1:{FlowSecStack.FreePort()}");

    /// <inheritdoc />
    public async Task InitializeAsync()
    {
        var token = TokenFile.ReadOrCreate(TokenFilePath);
        await _clickHouse.InitializeAsync();
        _relay = FlowSecStack.StartRelay("relay", RelayAddress.Port, UiAddress.Port, TokenFilePath, _clickHouse.Server.Url, Dir,
            "--ClickHouse:FlushInterval=00:00:00.100");
        Client = new GrpcClient(RelayAddress, token);
        await FlowSecStack.WaitForStatusAsync(StatusAsync, s => s.StorageOk, _relay, "relay with storage");
    }

    /// <summary>Pushes <paramref name="events"/> as one batch of node <paramref name="node"/> and waits until the relay has stored them.</summary>
    public async Task IngestAsync(IReadOnlyCollection<Event> events, string node = "test-node")
    {
        var storedBefore = (await StatusAsync()).EventsStored;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await using (var call = await Client.DuplexAsync<EventBatch, IngestAck>(RelayMethods.Push, IngestAck.Parser, timeout.Token))
        {
            var batch = new EventBatch { Node = node, BatchId = (ulong)Random.Shared.NextInt64(1, long.MaxValue) };
            batch.Events.AddRange(events);
            await call.WriteAsync(batch, timeout.Token);
            var ack = await call.ReadAsync(timeout.Token);
            ack!.BatchId.Should().Be(batch.BatchId, "the relay acks a batch once ClickHouse holds it");
        }
        await FlowSecStack.WaitForStatusAsync(StatusAsync, s => s.EventsStored >= storedBefore + (ulong)events.Count, _relay!, "events stored");
    }

    /// <summary>Runs the CLI against this relay (see <see cref="CliRunner.RunAsync"/>).</summary>
    public Task<(List<string> Stdout, string Stderr)> CliAsync(int expectedExit, params string[] args) =>
        CliRunner.RunAsync(RelayAddress, TokenFilePath, expectedExit, args);

    /// <summary>Relay status.</summary>
    public Task<StatusResponse> StatusAsync() =>
        Client.UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser, CancellationToken.None, TimeSpan.FromSeconds(10));

    /// <inheritdoc />
    public async Task DisposeAsync()
    {
        Client?.Dispose();
        if (_relay is not null)
        {
            await _relay.DisposeAsync();
        }
        await _clickHouse.DisposeAsync();
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
