using FlowSec.Api.Metrics;
using FlowSec.Sensor.Export;

namespace FlowSec.Sensor.Metrics;

/// <summary>
/// The sensor's Prometheus endpoint: every counter of every capture (events, kernel ring-buffer
/// drops, queue drops, malformed records…) and the state of each capture path, so loss is never
/// silent and is scrapeable where `flowsec status` is not at hand.
/// </summary>
public static class SensorMetrics
{
    // Counters that are levels, not totals.
    private static readonly HashSet<string> Gauges = ["queue_depth", "export_unacked_batches", "spool_batches", "spool_bytes"];

    /// <summary>Maps GET /metrics.</summary>
    public static void MapSensorMetrics(this WebApplication app)
    {
        app.MapGet("/metrics", (SensorStatusReporter reporter, RelayExporter exporter, Microsoft.Extensions.Options.IOptions<SensorOptions> options) =>
            Results.Text(PrometheusText.Render(Samples(reporter, exporter, options.Value.Node)), PrometheusText.ContentType));
    }

    /// <summary>The samples for one scrape.</summary>
    public static IEnumerable<MetricSample> Samples(SensorStatusReporter reporter, RelayExporter exporter, string node)
    {
        var status = reporter.Snapshot();
        exporter.AddCounters(status.Counters);
        var relayConnected = exporter.Connected;
        var nodeLabel = new KeyValuePair<string, string>("node", node);
        foreach (var (name, value) in status.Counters)
        {
            var gauge = Gauges.Contains(name);
            yield return new MetricSample($"flowsec_sensor_{name}{(gauge ? "" : "_total")}",
                $"FlowSec sensor {name.Replace('_', ' ')}", !gauge, value, [nodeLabel]);
        }
        foreach (var path in status.Capture)
        {
            yield return new MetricSample("flowsec_sensor_capture_active", "1 when the capture path is active, 0 when degraded or unavailable",
                false, path.State == "active" ? 1 : 0,
                [nodeLabel, new("signal", path.Signal), new("program", path.Program), new("path", path.Path), new("state", path.State)]);
        }
        yield return new MetricSample("flowsec_sensor_relay_connected", "1 while a stream to the relay is open", false,
            relayConnected ? 1 : 0, [nodeLabel]);
    }
}
