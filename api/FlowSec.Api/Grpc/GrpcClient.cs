using System.Net;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using FlowSec.Api.Auth;
using Google.Protobuf;

namespace FlowSec.Api.Grpc;

/// <summary>
/// The client half of FlowSec's gRPC transport over <see cref="HttpClient"/> (HTTP/2 with prior
/// knowledge on http://, TLS on https://). Grpc.Net.Client is not available here.
/// </summary>
public sealed class GrpcClient : IDisposable
{
    internal static readonly MediaTypeHeaderValue GrpcContentType = new("application/grpc");

    private readonly HttpClient _http;
    private readonly Uri _address;
    private readonly string? _token;

    /// <summary>
    /// Creates a client for a relay address such as http://127.0.0.1:4245, or https://… with
    /// <paramref name="tls"/> naming the relay's CA and this client's certificate (mutual TLS).
    /// </summary>
    public GrpcClient(Uri address, string? token, HttpMessageHandler? handler = null, ClientTls? tls = null)
    {
        _address = address;
        _token = token;
        if (tls is { IsConfigured: true } && address.Scheme != Uri.UriSchemeHttps)
        {
            throw new ArgumentException($"TLS files are set but the relay address {address} is not https://", nameof(tls));
        }
        _http = new HttpClient(handler ?? new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            KeepAlivePingDelay = TimeSpan.FromSeconds(20),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            ConnectTimeout = TimeSpan.FromSeconds(5),
            SslOptions = tls?.ToSslOptions() ?? new(),
        })
        { Timeout = Timeout.InfiniteTimeSpan };
    }

    /// <summary>The relay address.</summary>
    public Uri Address => _address;

    /// <summary>Calls a unary method.</summary>
    public async Task<TResponse> UnaryAsync<TRequest, TResponse>(string method, TRequest request,
        MessageParser<TResponse> parser, CancellationToken ct, TimeSpan? deadline = null)
        where TRequest : IMessage
        where TResponse : class, IMessage<TResponse>
    {
        using var content = new SingleMessageContent(request);
        using var response = await SendAsync(method, content, deadline, ct);
        var stream = await response.Content.ReadAsStreamAsync(ct);
        var message = await GrpcFraming.ReadAsync(stream, parser, ct);
        await DrainAsync(stream, ct);
        ThrowIfError(response);
        return message ?? throw new GrpcException(GrpcStatusCode.Internal, "no response message");
    }

    /// <summary>Calls a server-streaming method and yields each response message.</summary>
    public async IAsyncEnumerable<TResponse> ServerStreamingAsync<TRequest, TResponse>(string method,
        TRequest request, MessageParser<TResponse> parser, [EnumeratorCancellation] CancellationToken ct)
        where TRequest : IMessage
        where TResponse : class, IMessage<TResponse>
    {
        using var content = new SingleMessageContent(request);
        using var response = await SendAsync(method, content, null, ct);
        var stream = await response.Content.ReadAsStreamAsync(ct);
        while (await GrpcFraming.ReadAsync(stream, parser, ct) is { } message)
        {
            yield return message;
        }
        ThrowIfError(response);
    }

    /// <summary>Opens a bidirectional-streaming call.</summary>
    public async Task<GrpcDuplexCall<TRequest, TResponse>> DuplexAsync<TRequest, TResponse>(string method,
        MessageParser<TResponse> parser, CancellationToken ct)
        where TRequest : IMessage
        where TResponse : class, IMessage<TResponse>
    {
        var content = new StreamingContent<TRequest>();
        var response = await SendAsync(method, content, null, ct);
        var stream = await response.Content.ReadAsStreamAsync(ct);
        return new GrpcDuplexCall<TRequest, TResponse>(content, response, stream, parser);
    }

    private async Task<HttpResponseMessage> SendAsync(string method, HttpContent content, TimeSpan? deadline,
        CancellationToken ct)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(_address, "/" + method))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        if (_token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _token);
        }
        if (deadline is { } d)
        {
            request.Headers.Add("grpc-timeout", $"{(long)Math.Ceiling(d.TotalMilliseconds)}m");
        }
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        }
        catch (HttpRequestException ex)
        {
            // The outer message is generic ("an error occurred"); the inner ones say why (refused, TLS).
            var reasons = new List<string>();
            for (Exception? e = ex; e is not null; e = e.InnerException)
            {
                reasons.Add(e.Message);
            }
            throw new GrpcException(GrpcStatusCode.Unavailable, $"cannot reach {_address}: {string.Join(": ", reasons.Distinct())}", ex);
        }
        if (response.StatusCode != HttpStatusCode.OK)
        {
            var body = await response.Content.ReadAsStringAsync(ct);
            response.Dispose();
            throw new GrpcException(GrpcStatusCode.Unavailable, $"HTTP {(int)response.StatusCode} from {_address}: {body.Trim()}");
        }
        // A trailers-only response (an immediate error) carries grpc-status in the headers.
        if (response.Headers.TryGetValues("grpc-status", out _))
        {
            ThrowIfError(response, fromHeaders: true);
        }
        return response;
    }

    internal static async Task DrainAsync(Stream stream, CancellationToken ct)
    {
        var scratch = new byte[256];
        while (await stream.ReadAsync(scratch, ct) > 0)
        {
        }
    }

    internal static void ThrowIfError(HttpResponseMessage response, bool fromHeaders = false)
    {
        var headers = fromHeaders ? (HttpHeaders)response.Headers : response.TrailingHeaders;
        if (!headers.TryGetValues("grpc-status", out var values))
        {
            throw new GrpcException(GrpcStatusCode.Internal, "response ended without grpc-status");
        }
        var code = (GrpcStatusCode)int.Parse(values.First(), System.Globalization.CultureInfo.InvariantCulture);
        if (code == GrpcStatusCode.Ok)
        {
            return;
        }
        var message = headers.TryGetValues("grpc-message", out var m) ? Uri.UnescapeDataString(m.First()) : "";
        throw new GrpcException(code, message);
    }

    /// <inheritdoc />
    public void Dispose() => _http.Dispose();

    private sealed class SingleMessageContent : HttpContent
    {
        private readonly IMessage message;

        public SingleMessageContent(IMessage message)
        {
            this.message = message;
            Headers.ContentType = GrpcContentType;
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            GrpcFraming.WriteAsync(stream, message, CancellationToken.None).AsTask();

        protected override bool TryComputeLength(out long length)
        {
            length = message.CalculateSize() + 5;
            return true;
        }

        protected override void SerializeToStream(Stream stream, TransportContext? context, CancellationToken ct) =>
            SerializeToStreamAsync(stream, context).GetAwaiter().GetResult();
    }
}

/// <summary>An open bidirectional call: write requests, read responses, then complete.</summary>
public sealed class GrpcDuplexCall<TRequest, TResponse> : IAsyncDisposable
    where TRequest : IMessage
    where TResponse : class, IMessage<TResponse>
{
    private readonly StreamingContent<TRequest> _content;
    private readonly HttpResponseMessage _response;
    private readonly Stream _responseStream;
    private readonly MessageParser<TResponse> _parser;

    internal GrpcDuplexCall(StreamingContent<TRequest> content, HttpResponseMessage response, Stream responseStream,
        MessageParser<TResponse> parser)
    {
        _content = content;
        _response = response;
        _responseStream = responseStream;
        _parser = parser;
    }

    /// <summary>Sends one request message.</summary>
    public ValueTask WriteAsync(TRequest message, CancellationToken ct) => _content.WriteAsync(message, ct);

    /// <summary>Ends the request stream (half-close).</summary>
    public void CompleteRequests() => _content.Complete();

    /// <summary>Reads the next response, or null when the server ended the call successfully.</summary>
    /// <exception cref="GrpcException">The server ended the call with an error status.</exception>
    public async ValueTask<TResponse?> ReadAsync(CancellationToken ct)
    {
        var message = await GrpcFraming.ReadAsync(_responseStream, _parser, ct);
        if (message is null)
        {
            GrpcClient.ThrowIfError(_response);
        }
        return message;
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        _content.Complete();
        _response.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>A request body that streams messages as the caller writes them.</summary>
internal sealed class StreamingContent<T> : HttpContent where T : IMessage
{
    private readonly Channel<T> _messages = Channel.CreateBounded<T>(16);

    public StreamingContent() => Headers.ContentType = GrpcClient.GrpcContentType;

    public ValueTask WriteAsync(T message, CancellationToken ct) => _messages.Writer.WriteAsync(message, ct);

    public void Complete() => _messages.Writer.TryComplete();

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
    {
        // HttpClient holds back the HEADERS frame until the body's first flush; flush now, or
        // the server never sees the call and neither side moves.
        await stream.FlushAsync();
        await foreach (var message in _messages.Reader.ReadAllAsync())
        {
            await GrpcFraming.WriteAsync(stream, message, CancellationToken.None);
            await stream.FlushAsync();
        }
    }

    protected override bool TryComputeLength(out long length)
    {
        length = -1;
        return false;
    }
}
