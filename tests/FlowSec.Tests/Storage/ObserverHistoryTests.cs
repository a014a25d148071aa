using System.Net;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Relay;
using FlowSec.Relay.Ingest;
using FlowSec.Relay.Observer;
using FlowSec.Relay.Pipeline;
using FlowSec.Relay.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FlowSec.Tests.Storage;

/// <summary>
/// The observer API's history from ClickHouse: every requested type (none = all) merged in time
/// order, over our gRPC transport on loopback, with the relay's storage and observer services.
/// </summary>
public sealed class ObserverHistoryTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    [Fact]
    public async Task GetEvents_returns_history_of_every_requested_type_and_refuses_bad_requests()
    {
        var events = TestEvents.Mixed(40);
        var port = ClickHouseServer.FreePort();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ClickHouse:Url"] = ch.Server.Url,
            ["ClickHouse:Database"] = ClickHouseServer.NewDatabase(),
            ["ClickHouse:FlushInterval"] = "00:00:00.100",
        });
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port, o => o.Protocols = HttpProtocols.Http2));
        builder.Services.Configure<RelayOptions>(_ => { });
        builder.Services.AddSingleton<NodeRegistry>();
        builder.Services.AddSingleton<RecentBatches>();
        builder.Services.AddSingleton<ObserverFeed>();
        builder.Services.AddSingleton<ILiveEventSink>(sp => sp.GetRequiredService<ObserverFeed>());
        builder.Services.AddSingleton<EventPipeline>();
        builder.Services.AddSingleton<ObserverService>();
        builder.Services.AddClickHouseStorage(builder.Configuration);
        await using var app = builder.Build();
        app.MapGrpcServerStreaming<GetEventsRequest, Event>(RelayMethods.GetEvents, GetEventsRequest.Parser,
            app.Services.GetRequiredService<ObserverService>().GetEventsAsync);
        await app.StartAsync();

        var batch = new EventBatch();
        batch.Events.AddRange(events);
        await app.Services.GetRequiredService<EventPipeline>().PublishAsync(batch, CancellationToken.None);
        var writer = app.Services.GetRequiredService<ClickHouseFlowWriter>();
        await Eventually.HoldsAsync(() => writer.EventsStored == events.Count, TimeSpan.FromSeconds(30), () => $"stored {writer.EventsStored}");

        using var client = new GrpcClient(new Uri($"http://127.0.0.1:{port}"), token: null);
        async Task<List<Event>> GetAsync(GetEventsRequest request)
        {
            var result = new List<Event>();
            await foreach (var e in client.ServerStreamingAsync(RelayMethods.GetEvents, request, Event.Parser, CancellationToken.None))
            {
                result.Add(e);
            }

            return result;
        }

        (await GetAsync(new GetEventsRequest())).Should().Equal(events, "no types = every type, in time order");
        (await GetAsync(new GetEventsRequest { EventTypes = { EventType.Exec, EventType.Exit } }))
            .Should().Equal(events.Where(e => e.Type is EventType.Exec or EventType.Exit));
        (await GetAsync(new GetEventsRequest { EventTypes = { EventType.Dns, EventType.File }, Last = 7 }))
            .Should().Equal(events.Where(e => e.Type is EventType.Dns or EventType.File).TakeLast(7));
        (await GetAsync(new GetEventsRequest { Last = ObserverService.MaxLast })).Should().Equal(events);
        (await GetAsync(new GetEventsRequest { SinceUnixNano = events[100].TimeUnixNano, UntilUnixNano = events[150].TimeUnixNano }))
            .Should().Equal(events.Skip(100).Take(50));

        foreach (var (bad, what) in new[]
                 {
                     (new GetEventsRequest { Last = ObserverService.MaxLast + 1 }, "at most"),
                     (new GetEventsRequest { Last = uint.MaxValue }, "at most"), // was cast to int -1
                     (new GetEventsRequest { EventTypes = { EventType.Flow, (EventType)42 } }, "unknown event type"),
                     (new GetEventsRequest { EventTypes = { EventType.Unspecified } }, "unknown event type"),
                     (new GetEventsRequest { SinceUnixNano = 1, UntilUnixNano = ulong.MaxValue }, "DateTime holds"),
                 })
        {
            var act = () => GetAsync(bad);
            (await act.Should().ThrowAsync<GrpcException>()).Which.Should().Match<GrpcException>(
                e => e.Status == GrpcStatusCode.InvalidArgument && e.Detail.Contains(what, StringComparison.Ordinal), bad.ToString());
        }

        await app.StopAsync();
    }
}
