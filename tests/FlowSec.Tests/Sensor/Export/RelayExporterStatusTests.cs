using System.Collections.Concurrent;
using System.Net;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Sensor;
using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Export;
using FlowSec.Tests.Integration;
using FlowSec.Tests.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace FlowSec.Tests.Sensor.Export;

/// <summary>
/// Which batches carry the sensor's status: the relay shows a node's last one, so the first batch
/// of a stream and every heartbeat must carry it; between them, at most one per
/// <see cref="SensorOptions.StatusInterval"/> (a snapshot reads every capture's kernel counters).
/// </summary>
public sealed class RelayExporterStatusTests : IAsyncLifetime
{
    private readonly int _port = FlowSecStack.FreePort();
    private readonly ConcurrentQueue<EventBatch> _received = new();
    private WebApplication _relay = null!;

    public async Task InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, _port, o => o.Protocols = HttpProtocols.Http2));
        _relay = builder.Build();
        _relay.MapGrpcDuplex<EventBatch, IngestAck>(RelayMethods.Push, EventBatch.Parser, async (batches, acks, _) =>
        {
            await foreach (var batch in batches)
            {
                _received.Enqueue(batch);
                await acks.WriteAsync(new IngestAck { BatchId = batch.BatchId, Accepted = (uint)batch.Events.Count });
            }
        });
        await _relay.StartAsync();
    }

    public async Task DisposeAsync() => await _relay.DisposeAsync();

    [Fact]
    public async Task Within_the_interval_only_the_first_batch_carries_the_status()
    {
        var queue = new SensorEventQueue();
        for (int i = 0; i < 50; i++)
        {
            queue.TryEnqueue(Flow(i));
        }
        await using var exporter = await StartAsync(queue, new SensorOptions
        {
            BatchMaxEvents = 5,
            StatusInterval = TimeSpan.FromHours(1),
            HeartbeatInterval = TimeSpan.FromHours(1),
        });

        await Eventually.HoldsAsync(() => _received.Sum(b => b.Events.Count) == 50,
            TimeSpan.FromSeconds(30), () => $"{_received.Sum(b => b.Events.Count)} of 50 events received");

        var batches = _received.Where(b => b.Events.Count > 0).ToList();
        batches.Should().HaveCountGreaterThanOrEqualTo(10, "50 events in batches of at most 5");
        _received.First().Status.Should().NotBeNull("the relay learns the node's capture paths and counters from the stream's first batch");
        _received.First().Status.Counters.Should().ContainKey("queue_enqueued");
        _received.Skip(1).Should().OnlyContain(b => b.Status == null, "no second status within the interval");
    }

    [Fact]
    public async Task Batches_carry_the_status_again_once_the_interval_has_passed()
    {
        var queue = new SensorEventQueue();
        await using var exporter = await StartAsync(queue, new SensorOptions
        {
            BatchMaxEvents = 1,
            StatusInterval = TimeSpan.FromMilliseconds(200),
            HeartbeatInterval = TimeSpan.FromHours(1),
        });

        // One event at a time until three batches with events carry a status: the interval elapses between them.
        int sent = 0;
        await Eventually.HoldsAsync(() =>
        {
            queue.TryEnqueue(Flow(sent++));
            return _received.Count(b => b.Events.Count > 0 && b.Status != null) >= 3;
        }, TimeSpan.FromSeconds(30), () => $"{_received.Count(b => b.Status != null)} of {_received.Count} batches with a status");

        var withStatus = _received.Where(b => b.Status != null).ToList();
        withStatus.Last().Status.Counters["queue_enqueued"].Should().BeGreaterThan(withStatus.First().Status.Counters["queue_enqueued"],
            "a later status counts the events enqueued since");
    }

    [Fact]
    public async Task Heartbeats_carry_the_status()
    {
        await using var exporter = await StartAsync(new SensorEventQueue(), new SensorOptions
        {
            StatusInterval = TimeSpan.FromHours(1),
            HeartbeatInterval = TimeSpan.FromMilliseconds(100),
        });

        await Eventually.HoldsAsync(() => _received.Count >= 3,
            TimeSpan.FromSeconds(30), () => $"{_received.Count} heartbeats received");

        _received.Should().OnlyContain(b => b.Events.Count == 0 && b.Status != null,
            "with nothing to send, the heartbeat is what keeps the relay's view of the node current");
    }

    private async Task<RunningExporter> StartAsync(SensorEventQueue queue, SensorOptions options)
    {
        options.Relay = $"http://127.0.0.1:{_port}";
        options.Node = "status-test";
        var exporter = new RelayExporter(queue, new SensorStatusReporter([], queue),
            new EndpointEnricher(new CgroupResolver(Path.GetTempPath()), []), Options.Create(options), NullLogger<RelayExporter>.Instance);
        await exporter.StartAsync(CancellationToken.None);
        return new RunningExporter(exporter);
    }

    private static Event Flow(int i) => new()
    {
        Type = EventType.Flow,
        Node = "status-test",
        Flow = new Flow { Protocol = Protocol.Tcp, State = "closed", SocketId = (ulong)i },
    };

    private sealed class RunningExporter(RelayExporter exporter) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await exporter.StopAsync(CancellationToken.None);
            exporter.Dispose();
        }
    }
}
