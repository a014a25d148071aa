using System.Net;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Relay;
using FlowSec.Relay.Ingest;
using FlowSec.Relay.Live;
using FlowSec.Relay.Metrics;
using FlowSec.Relay.Observer;
using FlowSec.Relay.Pipeline;
using FlowSec.Relay.Storage;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;

// The relay: gRPC ingest from sensors → pipeline → ClickHouse and live fan-out (SignalR, observers).
// Content root = the relay's own directory, not wherever it was started: the host watches its
// content root recursively for appsettings changes, and `flowsec up` (or a bench) starts the relay
// from a directory that holds ClickHouse's data, whose part directories come and go many times a
// second under ingest (about 1.5 % of the relay's CPU went to those file events).
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
var relay = builder.Configuration.GetSection("Relay").Get<RelayOptions>() ?? new RelayOptions();
builder.Services.Configure<RelayOptions>(builder.Configuration.GetSection("Relay"));

if (relay.TokenFile.Length == 0)
{
    Console.Error.WriteLine("flowsec-relay: --Relay:TokenFile=PATH is required (sensors and CLI authenticate with it)");
    return 2;
}
builder.Services.AddSingleton(new TokenAuthenticator(TokenFile.Read(relay.TokenFile)));

Microsoft.AspNetCore.Server.Kestrel.Https.HttpsConnectionAdapterOptions? https;
try
{
    https = RelayTls.Build(relay.Tls);
}
catch (InvalidOperationException ex)
{
    Console.Error.WriteLine($"flowsec-relay: {ex.Message}");
    return 2;
}

if (relay.KeepAlivePingDelay < TimeSpan.Zero || relay.KeepAlivePingTimeout <= TimeSpan.Zero)
{
    Console.Error.WriteLine($"flowsec-relay: --Relay:KeepAlivePingDelay must be 0 (off) or more and --Relay:KeepAlivePingTimeout more than 0 (got {relay.KeepAlivePingDelay}, {relay.KeepAlivePingTimeout})");
    return 2;
}

builder.WebHost.ConfigureKestrel(kestrel =>
{
    // Server-wide (Kestrel has no per-endpoint HTTP/2 limits): a ping timeout aborts the connection,
    // so a half-open sensor stream ends like a closed one (node disconnected, unacked batches withdrawn).
    if (relay.KeepAlivePingDelay > TimeSpan.Zero)
    {
        kestrel.Limits.Http2.KeepAlivePingDelay = relay.KeepAlivePingDelay;
        kestrel.Limits.Http2.KeepAlivePingTimeout = relay.KeepAlivePingTimeout;
    }
    kestrel.Listen(IPEndPoint.Parse(relay.GrpcListen), o =>
    {
        o.Protocols = HttpProtocols.Http2;
        if (https is not null)
        {
            o.UseHttps(https);
        }
    });
    kestrel.Listen(IPEndPoint.Parse(relay.UiListen), o => o.Protocols = HttpProtocols.Http1AndHttp2);
});

builder.Services.AddSingleton<NodeRegistry>();
builder.Services.AddSingleton<RecentBatches>();
builder.Services.AddSingleton<ObserverFeed>();
builder.Services.AddSingleton<ILiveEventSink>(sp => sp.GetRequiredService<ObserverFeed>());
builder.Services.AddSingleton(sp => new EventPipeline(sp.GetServices<ILiveEventSink>(), storageCapacityEvents: relay.StorageQueueEvents));
builder.Services.AddSingleton<IngestService>();
builder.Services.AddSingleton<ObserverService>();
builder.Services.AddClickHouseStorage(builder.Configuration);
builder.Services.AddLiveUpdates();

var app = builder.Build();

var ingest = app.Services.GetRequiredService<IngestService>();
var observer = app.Services.GetRequiredService<ObserverService>();
app.MapGrpcDuplex<ReceivedBatch, IngestAck>(RelayMethods.Push, ingest.Decode, ingest.PushAsync);
app.MapGrpcServerStreaming<GetEventsRequest, Event>(RelayMethods.GetEvents, GetEventsRequest.Parser, observer.GetEventsAsync);
app.MapGrpcUnary<StatusRequest, StatusResponse>(RelayMethods.GetStatus, StatusRequest.Parser, observer.GetStatusAsync);
app.MapGrpcUnary<AggregateRequest, AggregateResponse>(RelayMethods.Aggregate, AggregateRequest.Parser, observer.AggregateAsync);

app.MapRelayMetrics();
app.MapLiveUpdates(UiLocator.Find(app.Services.GetRequiredService<IOptions<RelayOptions>>().Value.UiDirectory));

app.Logger.LogInformation("FlowSec relay: gRPC on {Grpc} ({Security}), UI on {Ui}", relay.GrpcListen,
    https is null ? "plain h2c, token" : https.ClientCertificateMode == Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.RequireCertificate ? "mutual TLS, token" : "TLS, token",
    relay.UiUrl);
await app.RunAsync();
return 0;
