using System.Globalization;
using FlowSec.Api.Auth;
using Google.Protobuf;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FlowSec.Api.Grpc;

/// <summary>What a gRPC method handler knows about its call.</summary>
/// <param name="Http">The underlying HTTP/2 request.</param>
/// <param name="CancellationToken">Cancelled when the client goes away or the deadline passes.</param>
public sealed record GrpcCallContext(HttpContext Http, CancellationToken CancellationToken);

/// <summary>Writes response messages of a streaming call.</summary>
public sealed class GrpcResponseStream<T>(Stream body, CancellationToken ct) where T : IMessage
{
    private readonly SemaphoreSlim _lock = new(1, 1);

    /// <summary>Sends one message and flushes it, so live consumers see it at once.</summary>
    public async ValueTask WriteAsync(T message)
    {
        await _lock.WaitAsync(ct);
        try
        {
            await GrpcFraming.WriteAsync(body, message, ct);
            await body.FlushAsync(ct);
        }
        finally
        {
            _lock.Release();
        }
    }
}

/// <summary>
/// The server half of FlowSec's gRPC transport, on Kestrel HTTP/2: each method is one endpoint at
/// <c>POST /package.Service/Method</c>. Grpc.AspNetCore is not available here; this covers what
/// FlowSec needs (unary, server streaming, bidirectional streaming, deadlines, bearer tokens).
/// </summary>
public static class GrpcServerEndpoints
{
    /// <summary>Maps a unary method.</summary>
    public static IEndpointConventionBuilder MapGrpcUnary<TRequest, TResponse>(
        this IEndpointRouteBuilder app, string method, MessageParser<TRequest> parser,
        Func<TRequest, GrpcCallContext, Task<TResponse>> handler)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse> =>
        Map(app, method, async (ctx, call) =>
        {
            var request = await ReadSingleAsync(ctx, parser, call.CancellationToken);
            var response = await handler(request, call);
            await GrpcFraming.WriteAsync(ctx.Response.Body, response, call.CancellationToken);
        });

    /// <summary>Maps a server-streaming method.</summary>
    public static IEndpointConventionBuilder MapGrpcServerStreaming<TRequest, TResponse>(
        this IEndpointRouteBuilder app, string method, MessageParser<TRequest> parser,
        Func<TRequest, GrpcResponseStream<TResponse>, GrpcCallContext, Task> handler)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse> =>
        Map(app, method, async (ctx, call) =>
        {
            var request = await ReadSingleAsync(ctx, parser, call.CancellationToken);
            await ctx.Response.StartAsync(call.CancellationToken);
            await handler(request, new GrpcResponseStream<TResponse>(ctx.Response.Body, call.CancellationToken), call);
        });

    /// <summary>Maps a bidirectional-streaming method.</summary>
    public static IEndpointConventionBuilder MapGrpcDuplex<TRequest, TResponse>(
        this IEndpointRouteBuilder app, string method, MessageParser<TRequest> parser,
        Func<IAsyncEnumerable<TRequest>, GrpcResponseStream<TResponse>, GrpcCallContext, Task> handler)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse> =>
        MapDuplex(app, method, (stream, ct) => GrpcFraming.ReadAsync(stream, parser, ct), handler);

    /// <summary>
    /// Maps a bidirectional-streaming method whose requests are decoded from their bytes by
    /// <paramref name="parse"/> (on the stream's own read loop) instead of a generated parser.
    /// </summary>
    public static IEndpointConventionBuilder MapGrpcDuplex<TRequest, TResponse>(
        this IEndpointRouteBuilder app, string method, ParseMessage<TRequest> parse,
        Func<IAsyncEnumerable<TRequest>, GrpcResponseStream<TResponse>, GrpcCallContext, Task> handler)
        where TRequest : class
        where TResponse : class, IMessage<TResponse> =>
        MapDuplex(app, method, (stream, ct) => GrpcFraming.ReadAsync(stream, parse, ct), handler);

    private static IEndpointConventionBuilder MapDuplex<TRequest, TResponse>(
        IEndpointRouteBuilder app, string method, Func<Stream, CancellationToken, ValueTask<TRequest?>> read,
        Func<IAsyncEnumerable<TRequest>, GrpcResponseStream<TResponse>, GrpcCallContext, Task> handler)
        where TRequest : class
        where TResponse : class, IMessage<TResponse> =>
        Map(app, method, async (ctx, call) =>
        {
            // Send headers now: the client waits for them before it reads acks.
            await ctx.Response.StartAsync(call.CancellationToken);
            await ctx.Response.Body.FlushAsync(call.CancellationToken);
            await handler(ReadAllAsync(ctx.Request.Body, read, call.CancellationToken),
                new GrpcResponseStream<TResponse>(ctx.Response.Body, call.CancellationToken), call);
        });

    private static IEndpointConventionBuilder Map(IEndpointRouteBuilder app, string method,
        Func<HttpContext, GrpcCallContext, Task> body)
    {
        var logger = app.ServiceProvider.GetRequiredService<ILoggerFactory>().CreateLogger("FlowSec.Grpc");
        var auth = app.ServiceProvider.GetService<TokenAuthenticator>();
        return app.MapPost("/" + method, async ctx =>
        {
            if (ctx.Request.Protocol != "HTTP/2" ||
                ctx.Request.ContentType?.StartsWith("application/grpc", StringComparison.Ordinal) != true)
            {
                ctx.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
                await ctx.Response.WriteAsync("gRPC requires HTTP/2 and content-type application/grpc\n");
                return;
            }
            // Streams may idle for long periods (a quiet node); Kestrel's minimum data rate would cut them.
            var rate = ctx.Features.Get<IHttpMinRequestBodyDataRateFeature>();
            if (rate is not null)
            {
                rate.MinDataRate = null;
            }
            var size = ctx.Features.Get<IHttpMaxRequestBodySizeFeature>();
            if (size is { IsReadOnly: false })
            {
                size.MaxRequestBodySize = null;
            }
            ctx.Response.ContentType = "application/grpc";
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted);
            if (ParseTimeout(ctx.Request.Headers["grpc-timeout"].ToString()) is { } timeout)
            {
                deadline.CancelAfter(timeout);
            }
            var status = GrpcStatusCode.Ok;
            var message = "";
            try
            {
                if (auth is not null && !auth.IsAuthorized(ctx.Request.Headers.Authorization.ToString()))
                {
                    throw new GrpcException(GrpcStatusCode.Unauthenticated, "missing or invalid bearer token");
                }
                await body(ctx, new GrpcCallContext(ctx, deadline.Token));
            }
            catch (GrpcException ex)
            {
                (status, message) = (ex.Status, ex.Detail);
            }
            catch (OperationCanceledException) when (deadline.IsCancellationRequested)
            {
                (status, message) = ctx.RequestAborted.IsCancellationRequested
                    ? (GrpcStatusCode.Cancelled, "cancelled by the client")
                    : (GrpcStatusCode.DeadlineExceeded, "deadline exceeded");
            }
            catch (Exception ex) when (ctx.RequestAborted.IsCancellationRequested || ex is IOException { InnerException: ConnectionAbortedException })
            {
                // The client went away (reset, or its connection closed, e.g. on a keep-alive ping
                // timeout): nobody to send a status to, and not the relay's fault.
                logger.LogInformation("gRPC method {Method}: the client went away ({Reason})", method, ex.GetBaseException().Message);
                return;
            }
            catch (Exception ex)
            {
                logger.LogError(ex, "gRPC method {Method} failed", method);
                (status, message) = (GrpcStatusCode.Internal, ex.Message);
            }
            if (ctx.RequestAborted.IsCancellationRequested)
            {
                return;
            }
            ctx.Response.AppendTrailer("grpc-status", ((int)status).ToString(CultureInfo.InvariantCulture));
            if (message.Length > 0)
            {
                ctx.Response.AppendTrailer("grpc-message", Uri.EscapeDataString(message));
            }
        });
    }

    private static async Task<T> ReadSingleAsync<T>(HttpContext ctx, MessageParser<T> parser, CancellationToken ct)
        where T : class, IMessage<T> =>
        await GrpcFraming.ReadAsync(ctx.Request.Body, parser, ct)
        ?? throw new GrpcException(GrpcStatusCode.InvalidArgument, "request message missing");

    private static async IAsyncEnumerable<T> ReadAllAsync<T>(Stream body, Func<Stream, CancellationToken, ValueTask<T?>> read,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
        where T : class
    {
        while (await read(body, ct) is { } message)
        {
            yield return message;
        }
    }

    /// <summary>Parses a grpc-timeout header ("100m", "5S", ...); null when absent or malformed.</summary>
    public static TimeSpan? ParseTimeout(string value)
    {
        if (value.Length < 2 || !long.TryParse(value.AsSpan(0, value.Length - 1), NumberStyles.None,
                CultureInfo.InvariantCulture, out var amount))
        {
            return null;
        }
        return value[^1] switch
        {
            'H' => TimeSpan.FromHours(amount),
            'M' => TimeSpan.FromMinutes(amount),
            'S' => TimeSpan.FromSeconds(amount),
            'm' => TimeSpan.FromMilliseconds(amount),
            'u' => TimeSpan.FromTicks(amount * 10),
            'n' => TimeSpan.FromTicks(amount / 100),
            _ => null,
        };
    }
}
