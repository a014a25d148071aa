using System.Text.RegularExpressions;

namespace FlowSec.Tests.Integration;

/// <summary>The sensor's Prometheus endpoint shows capture state and loss counters from the live sensor.</summary>
[Collection(StackCollection.Name)]
public sealed partial class SensorMetricsTests(FlowSecStack stack)
{
    [Fact]
    public async Task Metrics_expose_capture_state_and_every_drop_counter()
    {
        using var http = new HttpClient();
        var response = await http.GetAsync($"http://127.0.0.1:{stack.MetricsPort}/metrics");
        response.Content.Headers.ContentType!.MediaType.Should().Be("text/plain");
        var text = await response.Content.ReadAsStringAsync();

        text.Should().Contain("# TYPE flowsec_sensor_tcp_records_decoded_total counter");
        CaptureActive().IsMatch(text).Should().BeTrue(text);
        foreach (var loss in new[] { "tcp_ringbuf_dropped_total", "tcp_records_malformed_total", "queue_dropped_total", "tcp_socket_table_full_total", "tcp_program_runs_lost_total" })
        {
            text.Should().MatchRegex($"flowsec_sensor_{loss}{{node=\"{FlowSecStack.Node}\"}} \\d+", $"{loss} must be visible");
        }
        text.Should().Contain($"flowsec_sensor_relay_connected{{node=\"{FlowSecStack.Node}\"}} 1");
    }

    [GeneratedRegex("flowsec_sensor_capture_active\\{[^}]*signal=\"tcp\"[^}]*state=\"active\"\\} 1")]
    private static partial Regex CaptureActive();
}
