using System.Text.Json;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;

namespace FlowSec.Tests.Integration;

/// <summary>
/// A relay with mutual TLS on its gRPC port (what <c>flowsec up --tls</c> runs) serves sensors,
/// the CLI and Debian's python3-grpcio holding a certificate of its CA, and refuses — before any
/// gRPC frame — clients without one, with one from another CA, or speaking plain h2c. The token
/// is still required on top.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class MutualTlsTests(FlowSecStack stack) : IAsyncLifetime
{
    private readonly string _tls = Path.Combine(stack.Dir, "tls-" + Guid.NewGuid().ToString("N")[..6]);
    private readonly string _foreign = Path.Combine(stack.Dir, "tls-foreign-" + Guid.NewGuid().ToString("N")[..6]);
    private readonly int _port = FlowSecStack.FreePort();
    private ChildProcess? _relay;

    private Uri Address => new($"https://127.0.0.1:{_port}");

    private string F(string name) => Path.Combine(_tls, name);

    public Task InitializeAsync()
    {
        TlsMaterial.Create(_tls, TimeSpan.FromDays(1));
        TlsMaterial.Create(_foreign, TimeSpan.FromDays(1));
        return Task.CompletedTask;
    }

    // Started by the tests that talk to it (xUnit makes a new instance, so a new relay, per test).
    private async Task StartRelayAsync()
    {
        _relay = FlowSecStack.StartRelay("tls-relay", _port, FlowSecStack.FreePort(), stack.TokenFilePath, stack.ClickHouse.Url, stack.Dir,
            $"--Relay:Tls:Certificate={F(TlsMaterial.RelayCertificateFile)}", $"--Relay:Tls:Key={F(TlsMaterial.RelayKeyFile)}",
            $"--Relay:Tls:ClientCa={F(TlsMaterial.CaFile)}");
        using var client = Client(F(TlsMaterial.ClientCertificateFile), F(TlsMaterial.ClientKeyFile));
        await FlowSecStack.WaitForStatusAsync(() => client.UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser,
            CancellationToken.None, TimeSpan.FromSeconds(5)), s => s.StorageOk, _relay, "mTLS relay");
    }

    public async Task DisposeAsync()
    {
        if (_relay is not null)
        {
            await _relay.DisposeAsync();
        }
    }

    [Fact]
    public void Keys_are_readable_by_their_owner_only_and_certificates_chain_to_their_own_ca()
    {
        foreach (var key in new[] { TlsMaterial.RelayKeyFile, TlsMaterial.ClientKeyFile })
        {
            File.GetUnixFileMode(F(key)).Should().Be(UnixFileMode.UserRead | UnixFileMode.UserWrite, key);
        }
        Directory.GetFiles(_tls).Select(Path.GetFileName).Should().BeEquivalentTo(
            [TlsMaterial.CaFile, TlsMaterial.RelayCertificateFile, TlsMaterial.RelayKeyFile, TlsMaterial.ClientCertificateFile, TlsMaterial.ClientKeyFile],
            "the CA key is never written: new certificates mean a new CA");
        var roots = PrivateCa.ReadRoots(F(TlsMaterial.CaFile));
        using var client = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(F(TlsMaterial.ClientCertificateFile)));
        PrivateCa.Validates(client, roots).Should().BeTrue();
        PrivateCa.Validates(client, PrivateCa.ReadRoots(Path.Combine(_foreign, TlsMaterial.CaFile))).Should().BeFalse();
    }

    [Fact]
    public async Task A_client_with_a_certificate_of_the_ca_and_the_token_is_served()
    {
        await StartRelayAsync();
        using var client = Client(F(TlsMaterial.ClientCertificateFile), F(TlsMaterial.ClientKeyFile));
        var status = await client.UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser, CancellationToken.None);
        status.StorageOk.Should().BeTrue();

        using var noToken = Client(F(TlsMaterial.ClientCertificateFile), F(TlsMaterial.ClientKeyFile), token: stack.Token + "x");
        var refused = async () => await noToken.UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser, CancellationToken.None);
        (await refused.Should().ThrowAsync<GrpcException>()).Which.Status.Should().Be(GrpcStatusCode.Unauthenticated,
            "a certificate does not replace the token");
    }

    [Fact]
    public async Task Clients_without_a_certificate_of_the_ca_or_without_tls_fail_the_handshake()
    {
        await StartRelayAsync();
        var attempts = new (string What, Func<GrpcClient> Make)[]
        {
            ("no client certificate", () => Client("", "")),
            ("a certificate of another CA", () => Client(Path.Combine(_foreign, TlsMaterial.ClientCertificateFile), Path.Combine(_foreign, TlsMaterial.ClientKeyFile))),
            ("trusting another CA", () => new GrpcClient(Address, stack.Token, tls: new ClientTls
            {
                Ca = Path.Combine(_foreign, TlsMaterial.CaFile),
                Certificate = F(TlsMaterial.ClientCertificateFile),
                Key = F(TlsMaterial.ClientKeyFile),
            })),
            ("plain h2c", () => new GrpcClient(new Uri($"http://127.0.0.1:{_port}"), stack.Token)),
        };
        foreach (var (what, make) in attempts)
        {
            using var client = make();
            var call = async () => await client.UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser,
                CancellationToken.None, TimeSpan.FromSeconds(10));
            var thrown = await call.Should().ThrowAsync<Exception>(what);
            thrown.Which.Should().Match<Exception>(e => e is HttpRequestException || e is IOException || e is GrpcException && ((GrpcException)e).Status == GrpcStatusCode.Unavailable,
                $"{what}: refused by the transport, not answered ({thrown.Which.GetType().Name}: {thrown.Which.Message})");
        }
    }

    [Fact]
    public async Task A_sensor_with_the_client_certificate_streams_to_the_relay()
    {
        await StartRelayAsync();
        var node = "tls-sensor-" + Guid.NewGuid().ToString("N")[..6];
        await using var sensor = stack.StartSensor(node, Address, node, FlowSecStack.FreePort(), "--Sensor:NoBpf=true",
            $"--Sensor:Tls:Ca={F(TlsMaterial.CaFile)}", $"--Sensor:Tls:Certificate={F(TlsMaterial.ClientCertificateFile)}",
            $"--Sensor:Tls:Key={F(TlsMaterial.ClientKeyFile)}");
        using var client = Client(F(TlsMaterial.ClientCertificateFile), F(TlsMaterial.ClientKeyFile));
        await FlowSecStack.WaitForStatusAsync(
            () => client.UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser, CancellationToken.None),
            s => s.Nodes.Any(n => n.Node == node && n.Connected && n.Sensor is not null), sensor, "sensor over mutual TLS");
    }

    [Fact]
    public async Task Misconfigured_tls_stops_relay_and_sensor_at_start_naming_the_file()
    {
        var missing = Path.Combine(_tls, "missing.pem");
        await using (var relay = FlowSecStack.StartRelay("tls-bad-relay", FlowSecStack.FreePort(), FlowSecStack.FreePort(), stack.TokenFilePath,
            stack.ClickHouse.Url, stack.Dir, $"--Relay:Tls:Certificate={missing}"))
        {
            await relay.Exited.WaitAsync(TimeSpan.FromSeconds(30));
            relay.ExitCode.Should().Be(2);
            relay.Tail(10).Should().Contain(missing);
        }
        await using (var sensor = stack.StartSensor("tls-bad-sensor", Address, "tls-bad-sensor", FlowSecStack.FreePort(), "--Sensor:NoBpf=true",
            $"--Sensor:Tls:Ca={F(TlsMaterial.CaFile)}", $"--Sensor:Tls:Certificate={missing}"))
        {
            await sensor.Exited.WaitAsync(TimeSpan.FromSeconds(30));
            sensor.ExitCode.Should().Be(2);
            sensor.Tail(10).Should().Contain(missing);
        }
        await using (var sensor = stack.StartSensor("tls-plain-sensor", new Uri($"http://127.0.0.1:{_port}"), "tls-plain-sensor", FlowSecStack.FreePort(),
            "--Sensor:NoBpf=true", $"--Sensor:Tls:Ca={F(TlsMaterial.CaFile)}"))
        {
            await sensor.Exited.WaitAsync(TimeSpan.FromSeconds(30));
            sensor.ExitCode.Should().Be(2);
            sensor.Tail(10).Should().Contain("not https://");
        }
    }

    [Fact]
    public async Task The_cli_and_python_grpcio_use_the_client_certificate()
    {
        await StartRelayAsync();
        // A query answered through the mTLS relay (exit 0), then the same without a certificate.
        await CliRunner.RunAsync(Address, stack.TokenFilePath, 0, "query", "process", "--last", "1", "--tls-ca", F(TlsMaterial.CaFile),
            "--tls-cert", F(TlsMaterial.ClientCertificateFile), "--tls-key", F(TlsMaterial.ClientKeyFile));
        var (_, stderr) = await CliRunner.RunAsync(Address, stack.TokenFilePath, -1, "query", "process", "--last", "1", "--tls-ca", F(TlsMaterial.CaFile));
        stderr.Should().StartWith("flowsec: cannot reach https://127.0.0.1:").And.Contain("(Unavailable)")
            .And.NotContain("   at ", "one line, not a stack trace");

        var generated = await GrpcPeerTests.GeneratePythonProtosAsync();
        try
        {
            var output = await GrpcPeerTests.Run("/usr/bin/python3", Path.Combine(FlowSecStack.RepoRoot, "tests", "grpc-peer", "tls_peer.py"),
                $"127.0.0.1:{_port}", stack.Token, generated, F(TlsMaterial.CaFile), F(TlsMaterial.ClientCertificateFile), F(TlsMaterial.ClientKeyFile));
            var steps = output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => JsonDocument.Parse(l).RootElement)
                .ToDictionary(e => e.GetProperty("step").GetString()!);
            steps["with_cert"].GetProperty("code").GetString().Should().Be("OK", output);
            steps["with_cert"].GetProperty("storage_ok").GetBoolean().Should().BeTrue();
            steps["without_cert"].GetProperty("code").GetString().Should().Be("UNAVAILABLE", output);
        }
        finally
        {
            Directory.Delete(generated, recursive: true);
        }
    }

    private GrpcClient Client(string certificate, string key, string? token = null) =>
        new(Address, token ?? stack.Token, tls: new ClientTls { Ca = F(TlsMaterial.CaFile), Certificate = certificate, Key = key });
}
