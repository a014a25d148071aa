using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace FlowSec.Tests.Sensor;

public class SensorCaptureTests
{
    [Fact]
    public void AddTcpCapture_registers_one_capture_as_hosted_service_and_status_source()
    {
        var services = new ServiceCollection().AddLogging();
        var queue = new SensorEventQueue(16);
        services.AddSingleton(queue);

        services.AddTcpCapture(o =>
        {
            o.Node = "node-7";
            o.DrainIntervalMs = 2;
        });
        using var provider = services.BuildServiceProvider();

        var capture = provider.GetRequiredService<TcpCapture>();
        provider.GetServices<IHostedService>().Should().ContainSingle().Which.Should().BeSameAs(capture);
        provider.GetServices<ICaptureStatus>().Should().ContainSingle().Which.Should().BeSameAs(capture);
        provider.GetRequiredService<SensorEventQueue>().Should().BeSameAs(queue, "an existing queue is kept");
        var options = provider.GetRequiredService<IOptions<CaptureOptions>>().Value;
        options.Node.Should().Be("node-7");
        options.DrainIntervalMs.Should().Be(2);
        options.ActiveFlowReportInterval.Should().Be(TimeSpan.FromSeconds(10));
        capture.CapturePaths().Should().ContainSingle().Which.State.Should().Be("unavailable", "it has not started");
    }

    [Fact]
    public void Status_reporter_carries_the_tcp_capture_path_and_counters()
    {
        var services = new ServiceCollection().AddLogging();
        services.AddTcpCapture();
        services.AddSingleton<SensorStatusReporter>();
        using var provider = services.BuildServiceProvider();

        var status = provider.GetRequiredService<SensorStatusReporter>().Snapshot();

        status.Capture.Should().ContainSingle(c => c.Signal == "tcp");
        status.Counters.Keys.Should().Contain(new[]
        {
            "tcp_records_decoded", "tcp_records_malformed", "tcp_ringbuf_dropped", "tcp_socket_table_full",
            "tcp_flows_emitted", "tcp_sockets_tracked", "tcp_handler_errors", "tcp_program_runs_lost",
        });
    }

    [Fact]
    public void AddTcpCapture_supplies_a_queue_when_none_is_registered()
    {
        using var provider = new ServiceCollection().AddLogging().AddTcpCapture().BuildServiceProvider();

        provider.GetRequiredService<TcpCapture>().Should().NotBeNull();
        provider.GetRequiredService<SensorEventQueue>().Should().NotBeNull();
    }
}
