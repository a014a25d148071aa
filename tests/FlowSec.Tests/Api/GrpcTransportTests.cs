using System.Net;
using System.Net.Http.Headers;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Tests.Integration;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FlowSec.Tests.Api;

/// <summary>Our gRPC transport, both halves, over real HTTP/2 on loopback; hostile input included.</summary>
public sealed class GrpcTransportTests : IAsyncLifetime
{
    private const string Token = "secret-token";
    private readonly int _port = FlowSecStack.FreePort();
    private WebApplication _app = null!;

    public async Task InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(new TokenAuthenticator(Token));
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, _port, o => o.Protocols = HttpProtocols.Http2));
        _app = builder.Build();
        _app.MapGrpcUnary<StatusRequest, StatusResponse>("test.Svc/Unary", StatusRequest.Parser,
            (_, _) => Task.FromResult(new StatusResponse { Version = "v1", EventsReceived = 42 }));
        _app.MapGrpcUnary<StatusRequest, StatusResponse>("test.Svc/Slow", StatusRequest.Parser, async (_, call) =>
        {
            await Task.Delay(TimeSpan.FromSeconds(30), call.CancellationToken);
            return new StatusResponse();
        });
        _app.MapGrpcServerStreaming<GetEventsRequest, Event>("test.Svc/Stream", GetEventsRequest.Parser, async (req, stream, _) =>
        {
            for (var i = 0u; i < req.Last; i++)
            {
                await stream.WriteAsync(new Event { Node = "n" + i });
            }
        });
        _app.MapGrpcDuplex<EventBatch, IngestAck>("test.Svc/Duplex", EventBatch.Parser, async (batches, acks, _) =>
        {
            await foreach (var b in batches)
            {
                await acks.WriteAsync(new IngestAck { BatchId = b.BatchId, Accepted = (uint)b.Events.Count });
            }
        });
        // A hand-written message (the benchmark's counting sink): it has MergeFrom(CodedInputStream)
        // only, not the generated buffer-parsing code.
        _app.MapGrpcDuplex<FlowSec.Benchmarks.CountedBatch, IngestAck>("test.Svc/HandWritten", FlowSec.Benchmarks.CountedBatch.Parser, async (batches, acks, _) =>
        {
            await foreach (var b in batches)
            {
                await acks.WriteAsync(new IngestAck { BatchId = b.BatchId, Accepted = (uint)b.Events });
            }
        });
        await _app.StartAsync();
    }

    public async Task DisposeAsync() => await _app.DisposeAsync();

    private GrpcClient Client(string? token = Token) => new(new Uri($"http://127.0.0.1:{_port}"), token);

    [Fact]
    public async Task Unary_round_trips_a_message()
    {
        using var client = Client();
        var response = await client.UnaryAsync("test.Svc/Unary", new StatusRequest(), StatusResponse.Parser, CancellationToken.None);
        response.Version.Should().Be("v1");
        response.EventsReceived.Should().Be(42);
    }

    [Fact]
    public async Task Server_streaming_yields_every_message_in_order()
    {
        using var client = Client();
        var names = new List<string>();
        await foreach (var e in client.ServerStreamingAsync("test.Svc/Stream", new GetEventsRequest { Last = 500 }, Event.Parser, CancellationToken.None))
        {
            names.Add(e.Node);
        }
        names.Should().Equal(Enumerable.Range(0, 500).Select(i => "n" + i));
    }

    [Fact]
    public async Task Duplex_acks_each_batch_while_the_request_stream_is_open()
    {
        using var client = Client();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await using var call = await client.DuplexAsync<EventBatch, IngestAck>("test.Svc/Duplex", IngestAck.Parser, timeout.Token);
        for (var id = 1ul; id <= 3; id++)
        {
            var batch = new EventBatch { Node = "n", BatchId = id };
            batch.Events.Add(new Event());
            await call.WriteAsync(batch, timeout.Token);
            // Each ack arrives before the next batch is written: the call is truly bidirectional.
            var ack = await call.ReadAsync(timeout.Token);
            ack!.BatchId.Should().Be(id);
            ack.Accepted.Should().Be(1);
        }
        call.CompleteRequests();
        (await call.ReadAsync(timeout.Token)).Should().BeNull();
    }

    [Fact]
    public async Task Duplex_requests_parse_with_a_hand_written_message_parser()
    {
        // A regression: the server read requests through the parser's span overload, which throws
        // for any message without generated buffer-parsing code, so such an endpoint acked nothing.
        using var client = Client();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await using var call = await client.DuplexAsync<EventBatch, IngestAck>("test.Svc/HandWritten", IngestAck.Parser, timeout.Token);
        var batch = new EventBatch { Node = "n", BatchId = 7 };
        batch.Events.Add(new Event());
        batch.Events.Add(new Event());
        await call.WriteAsync(batch, timeout.Token);
        var ack = await call.ReadAsync(timeout.Token);
        ack!.BatchId.Should().Be(7);
        ack.Accepted.Should().Be(2);
        call.CompleteRequests();
        (await call.ReadAsync(timeout.Token)).Should().BeNull();
    }

    [Theory]
    [InlineData(null)]
    [InlineData("wrong")]
    [InlineData("secret-token-but-longer")]
    public async Task Calls_without_the_right_token_are_refused(string? token)
    {
        using var client = Client(token);
        var act = () => client.UnaryAsync("test.Svc/Unary", new StatusRequest(), StatusResponse.Parser, CancellationToken.None);
        (await act.Should().ThrowAsync<GrpcException>()).Which.Status.Should().Be(GrpcStatusCode.Unauthenticated);
    }

    [Fact]
    public async Task Deadline_is_enforced_by_the_server()
    {
        using var client = Client();
        var act = () => client.UnaryAsync("test.Svc/Slow", new StatusRequest(), StatusResponse.Parser, CancellationToken.None,
            TimeSpan.FromMilliseconds(200));
        (await act.Should().ThrowAsync<GrpcException>()).Which.Status.Should().Be(GrpcStatusCode.DeadlineExceeded);
    }

    [Theory]
    [InlineData(new byte[] { 0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff }, GrpcStatusCode.InvalidArgument)] // not protobuf
    [InlineData(new byte[] { 0, 0x7f, 0xff, 0xff, 0xff }, GrpcStatusCode.ResourceExhausted)]                // 2 GiB length prefix
    [InlineData(new byte[] { 1, 0, 0, 0, 1, 0 }, GrpcStatusCode.Unimplemented)]                              // compressed flag
    [InlineData(new byte[] { 0, 0, 0, 0, 9, 1 }, GrpcStatusCode.Internal)]                                   // truncated
    [InlineData(new byte[] { }, GrpcStatusCode.InvalidArgument)]                                             // no message
    public async Task Garbage_frames_get_a_grpc_error_not_a_crash(byte[] body, GrpcStatusCode expected)
    {
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, $"http://127.0.0.1:{_port}/test.Svc/Unary")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(body),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Token);
        using var response = await http.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();
        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.TrailingHeaders.GetValues("grpc-status").Single().Should().Be(((int)expected).ToString(System.Globalization.CultureInfo.InvariantCulture));

        // And the server still answers properly afterwards.
        await Unary_round_trips_a_message();
    }

    [Fact]
    public async Task A_relay_that_is_not_there_is_reported_as_unavailable()
    {
        using var client = new GrpcClient(new Uri($"http://127.0.0.1:{FlowSecStack.FreePort()}"), Token);
        var act = () => client.UnaryAsync("test.Svc/Unary", new StatusRequest(), StatusResponse.Parser, CancellationToken.None);
        (await act.Should().ThrowAsync<GrpcException>()).Which.Status.Should().Be(GrpcStatusCode.Unavailable);
    }
}
