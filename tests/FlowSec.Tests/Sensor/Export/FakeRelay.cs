using System.Collections.Concurrent;
using System.Net;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Sensor;
using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Export;
using FlowSec.Tests.Integration;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace FlowSec.Tests.Sensor.Export;

/// <summary>
/// A relay's <c>Ingest/Push</c> on loopback that records every batch it receives (parsed by the
/// generated code, as the relay's fallback does) and acks it, unless <paramref name="ack"/> says to
/// end the stream instead; plus a <see cref="RelayExporter"/> pointed at it.
/// </summary>
internal sealed class FakeRelay(Func<EventBatch, bool>? ack = null) : IAsyncDisposable
{
    private readonly int _port = FlowSecStack.FreePort();
    private WebApplication? _app;

    /// <summary>Every batch received, in order, across streams.</summary>
    public ConcurrentQueue<EventBatch> Received { get; } = new();

    /// <summary>Starts listening.</summary>
    public async Task StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, _port, o => o.Protocols = HttpProtocols.Http2));
        _app = builder.Build();
        _app.MapGrpcDuplex<EventBatch, IngestAck>(RelayMethods.Push, EventBatch.Parser, async (batches, acks, _) =>
        {
            await foreach (var batch in batches)
            {
                Received.Enqueue(batch);
                if (ack is not null && !ack(batch))
                {
                    return; // ends the stream without acking this batch
                }
                await acks.WriteAsync(new IngestAck { BatchId = batch.BatchId, Accepted = (uint)batch.Events.Count });
            }
        });
        await _app.StartAsync();
    }

    /// <summary>
    /// Starts an exporter that streams <paramref name="queue"/> to this relay as node "test", with
    /// <paramref name="enricher"/> (the queue's, when it has one) or one of its own.
    /// </summary>
    public async Task<IAsyncDisposable> StartExporterAsync(SensorEventQueue queue, SensorOptions options, EndpointEnricher? enricher = null)
    {
        options.Relay = $"http://127.0.0.1:{_port}";
        options.Node = "test";
        var exporter = new RelayExporter(queue, new SensorStatusReporter([], queue),
            enricher ?? new EndpointEnricher(new CgroupResolver(Path.GetTempPath()), []), Options.Create(options), NullLogger<RelayExporter>.Instance);
        await exporter.StartAsync(CancellationToken.None);
        return new RunningExporter(exporter);
    }

    /// <summary>A TCP flow event numbered by its socket id.</summary>
    public static Event Flow(int i) => new()
    {
        Type = EventType.Flow,
        Node = "test",
        Flow = new Flow { Protocol = Protocol.Tcp, State = "closed", SocketId = (ulong)i },
    };

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.DisposeAsync();
        }
    }

    private sealed class RunningExporter(RelayExporter exporter) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await exporter.StopAsync(CancellationToken.None);
            exporter.Dispose();
        }
    }
}
