using System.Diagnostics;
using System.Text.Json;

namespace FlowSec.Tests.Integration;

/// <summary>
/// Proves our hand-written gRPC transport against a real gRPC implementation: Debian's
/// python3-grpcio calls the relay (unary, bidirectional and server streaming, auth).
/// </summary>
[Collection(StackCollection.Name)]
public sealed class GrpcPeerTests(FlowSecStack stack)
{
    [Fact]
    public async Task Python_grpcio_calls_the_relay_and_is_refused_without_the_token()
    {
        var generated = await GeneratePythonProtosAsync();
        try
        {
            var output = await Run("/usr/bin/python3", Path.Combine(FlowSecStack.RepoRoot, "tests", "grpc-peer", "relay_peer.py"),
                $"127.0.0.1:{stack.GrpcPort}", stack.Token, generated, "python-peer", "65001");
            var steps = output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => JsonDocument.Parse(l).RootElement)
                .ToDictionary(e => e.GetProperty("step").GetString()!);

            steps["no_token"].GetProperty("code").GetString().Should().Be("UNAUTHENTICATED");
            steps["bad_token"].GetProperty("code").GetString().Should().Be("UNAUTHENTICATED");
            steps["status"].GetProperty("storage_ok").GetBoolean().Should().BeTrue();
            var acks = steps["push"].GetProperty("acks").EnumerateArray().ToList();
            acks.Should().ContainSingle();
            acks[0].GetProperty("batch_id").GetInt64().Should().Be(77);
            acks[0].GetProperty("accepted").GetInt32().Should().Be(1);
            steps["get_events"].GetProperty("found").GetBoolean().Should().BeTrue(output);
            steps["get_events"].GetProperty("process").GetString().Should().Be("python-peer");
            steps["get_events"].GetProperty("pid").GetInt32().Should().Be(4242);
        }
        finally
        {
            Directory.Delete(generated, recursive: true);
        }
    }

    /// <summary>Compiles FlowSec's protos for python into a new temporary directory (the caller deletes it).</summary>
    internal static async Task<string> GeneratePythonProtosAsync()
    {
        var generated = Directory.CreateTempSubdirectory("flowsec-pyproto-").FullName;
        var protos = Path.Combine(FlowSecStack.RepoRoot, "api", "FlowSec.Api", "Protos");
        await Run("protoc", $"-I{protos}", $"--python_out={generated}", "flowsec/v1/events.proto", "flowsec/v1/relay.proto");
        return generated;
    }

    /// <summary>Runs a program to completion (60 s at most), asserting exit code 0; returns its stdout.</summary>
    internal static async Task<string> Run(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        process.ExitCode.Should().Be(0, $"{file} failed: {await stderr}\n{await stdout}");
        return await stdout;
    }
}
