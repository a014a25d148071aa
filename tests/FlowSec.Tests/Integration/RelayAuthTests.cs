using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Relay;
using FlowSec.Relay.Storage;
using FlowSec.Sensor;
using Google.Protobuf;

namespace FlowSec.Tests.Integration;

/// <summary>
/// The real relay's ingest port refuses what is not from a sensor holding the token — no token, a
/// wrong token, a garbage frame — with a gRPC status, and stores nothing of it; every FlowSec port
/// listens on loopback only.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class RelayAuthTests(FlowSecStack stack)
{
    [Fact]
    public async Task Pushes_without_the_token_or_with_garbage_get_a_grpc_error_and_store_nothing()
    {
        var run = Guid.NewGuid().ToString("N")[..8];
        var refused = new[]
        {
            (Node: $"auth-none-{run}", Token: (string?)null, Body: Frame(Batch($"auth-none-{run}")), Expected: GrpcStatusCode.Unauthenticated),
            (Node: $"auth-wrong-{run}", Token: (string?)(stack.Token + "x"), Body: Frame(Batch($"auth-wrong-{run}")), Expected: GrpcStatusCode.Unauthenticated),
            (Node: $"auth-garbage-{run}", Token: (string?)stack.Token, Body: [0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff], Expected: GrpcStatusCode.InvalidArgument),
            (Node: $"auth-truncated-{run}", Token: (string?)stack.Token, Body: Frame(Batch($"auth-truncated-{run}"))[..^3], Expected: GrpcStatusCode.Internal),
        };
        foreach (var (node, token, body, expected) in refused)
        {
            var (status, message) = await PushRawAsync(token, body);
            status.Should().Be(expected, $"{node}: {message}");
            message.Should().NotBeNullOrEmpty("the error says what is wrong");
        }

        // The same push with the token is stored: the refusals above are the token's and the frame's doing.
        var accepted = $"auth-ok-{run}";
        (await PushRawAsync(stack.Token, Frame(Batch(accepted)))).Status.Should().Be(GrpcStatusCode.Ok);
        await stack.WaitForStoredEventAsync(e => e.Node == accepted, TimeSpan.FromSeconds(60), DateTimeOffset.UtcNow.AddMinutes(-5));

        using var clickHouse = new ClickHouseHttpClient(new ClickHouseOptions { Url = stack.ClickHouse.Url });
        var stored = await clickHouse.QueryTextAsync(
            $"SELECT node, count() FROM flowsec.process_events WHERE node LIKE {SqlLiteral.String($"auth-%-{run}")} GROUP BY node FORMAT TabSeparated");
        stored.Trim().Should().Be($"{accepted}\t1", "only the authenticated, well-formed push is stored");
        var nodes = (await stack.StatusAsync()).Nodes.Select(n => n.Node).Where(n => n.EndsWith(run, StringComparison.Ordinal));
        nodes.Should().Equal([accepted], "refused pushes never register a node");
    }

    [Fact]
    public async Task Every_port_listens_on_loopback_only_and_the_defaults_are_loopback()
    {
        new RelayOptions().GrpcListen.Should().StartWith("127.0.0.1:");
        new RelayOptions().UiListen.Should().StartWith("127.0.0.1:");
        new SensorOptions().MetricsListen.Should().StartWith("127.0.0.1:");
        new ClickHouseOptions().Url.Should().StartWith("http://127.0.0.1:");

        var listening = (await TestTopology.Sh("ss -Hltn")).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[3]).ToList();
        foreach (var port in new[] { stack.GrpcPort, stack.UiPort, stack.MetricsPort, stack.ClickHouse.HttpPort, stack.ClickHouse.TcpPort })
        {
            listening.Where(a => a.EndsWith($":{port}", StringComparison.Ordinal)).Should()
                .NotBeEmpty().And.OnlyContain(a => a == $"127.0.0.1:{port}", $"port {port} binds loopback only");
        }
    }

    private static EventBatch Batch(string node)
    {
        var batch = new EventBatch { Node = node, BatchId = 1 };
        batch.Events.Add(new Event
        {
            Type = EventType.Exec,
            TimeUnixNano = (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000,
            Source = new Endpoint { Pid = 4242, Process = "auth-probe" },
            Process = new ProcessInfo { Pid = 4242, Exe = "/usr/bin/auth-probe" },
        });
        return batch;
    }

    private static byte[] Frame(IMessage message)
    {
        var bytes = message.ToByteArray();
        var frame = new byte[5 + bytes.Length];
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)bytes.Length);
        bytes.CopyTo(frame, 5);
        return frame;
    }

    private async Task<(GrpcStatusCode Status, string Message)> PushRawAsync(string? token, byte[] body)
    {
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(stack.RelayAddress, "/" + RelayMethods.Push))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(body),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        using var response = await http.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();
        response.StatusCode.Should().Be(HttpStatusCode.OK, "gRPC errors travel in trailers");
        string? Header(string name) =>
            response.TrailingHeaders.TryGetValues(name, out var t) ? t.Single() :
            response.Headers.TryGetValues(name, out var h) ? h.Single() : null;
        var status = (GrpcStatusCode)int.Parse(Header("grpc-status") ?? "-1", System.Globalization.CultureInfo.InvariantCulture);
        return (status, Uri.UnescapeDataString(Header("grpc-message") ?? ""));
    }
}
