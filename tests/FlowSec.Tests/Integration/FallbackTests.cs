using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;

namespace FlowSec.Tests.Integration;

/// <summary>
/// A sensor that cannot use eBPF (forced here with --Sensor:NoBpf) still runs: its fallback
/// collector reports connections, labelled "fallback", and status says which path is in use and why.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class FallbackTests(FlowSecStack stack)
{
    private const string Node = "fallback-node";

    [Fact]
    public async Task Sensor_without_ebpf_reports_connections_through_the_labelled_fallback()
    {
        var metricsPort = FlowSecStack.FreePort();
        await using var sensor = stack.StartSensor("fallback-sensor", stack.RelayAddress, Node, metricsPort,
            "--Sensor:NoBpf=true", "--Sensor:FallbackPollInterval=00:00:00.200");

        var tcp = await WaitForCaptureAsync(sensor);
        await Eventually(async () =>
        {
            try
            {
                return await PollsAsync(metricsPort) >= 0;
            }
            catch (HttpRequestException)
            {
                return false; // the metrics endpoint starts just after the capture
            }
        }, TimeSpan.FromSeconds(10));
        tcp.Program.Should().Be("fallback");
        tcp.State.Should().Be("degraded");
        tcp.Reason.Should().Contain("NoBpf");

        // A connection that lives longer than the poll interval, so polling can see it.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var since = DateTimeOffset.UtcNow.AddSeconds(-1);
        using (var client = new TcpClient())
        {
            await client.ConnectAsync(IPAddress.Loopback, port);
            using var accepted = await listener.AcceptTcpClientAsync();
            // Hold the connection open until the collector has polled it a few times.
            sensor.Exited.IsCompleted.Should().BeFalse(sensor.Tail(40));
            var polls = await PollsAsync(metricsPort);
            await Eventually(async () => await PollsAsync(metricsPort) >= polls + 3, TimeSpan.FromSeconds(10));
        }

        var flow = await stack.WaitForStoredEventAsync(
            e => e.Node == Node && e.Type == EventType.Flow && e.Destination?.Port == (uint)port && e.Flow.Direction == "egress",
            TimeSpan.FromSeconds(20), since);
        flow.Capture.Should().Be("fallback");
        flow.Source.Pid.Should().Be((uint)Environment.ProcessId);
        flow.Flow.State.Should().Be("closed");
        flow.Flow.DurationNs.Should().BeGreaterThan(200_000_000, "the connection outlived several 200 ms polls (poll times jitter)");
    }

    private async Task<CapturePath> WaitForCaptureAsync(ChildProcess sensor)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(30))
        {
            sensor.Exited.IsCompleted.Should().BeFalse(sensor.Tail(30));
            var status = await stack.StatusAsync();
            var tcp = status.Nodes.FirstOrDefault(n => n.Node == Node && n.Connected)?.Sensor?.Capture.FirstOrDefault(c => c.Signal == "tcp");
            if (tcp is not null)
            {
                return tcp;
            }
            await Task.Delay(100);
        }
        throw new TimeoutException("fallback sensor did not report a tcp capture path:\n" + sensor.Tail(30));
    }

    private static async Task<long> PollsAsync(int metricsPort)
    {
        using var http = new HttpClient();
        var text = await http.GetStringAsync($"http://127.0.0.1:{metricsPort}/metrics");
        var line = text.Split('\n').Single(l => l.StartsWith("flowsec_sensor_fallback_polls_total{", StringComparison.Ordinal));
        return long.Parse(line[(line.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
    }

    private static async Task Eventually(Func<Task<bool>> condition, TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        while (!await condition())
        {
            watch.Elapsed.Should().BeLessThan(timeout, "the condition should hold in time");
            await Task.Delay(50);
        }
    }
}
