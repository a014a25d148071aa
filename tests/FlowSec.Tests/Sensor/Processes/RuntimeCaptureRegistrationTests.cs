using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using FlowSec.Sensor.Processes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace FlowSec.Tests.Sensor.Processes;

public class RuntimeCaptureRegistrationTests
{
    [Fact]
    public void Process_and_file_captures_register_as_hosted_services_and_status_sources_sharing_queue_and_table()
    {
        var services = new ServiceCollection().AddLogging();
        var queue = new SensorEventQueue(16);
        services.AddSingleton(queue);

        services.AddProcessCapture(o =>
        {
            o.Node = "node-7";
            o.MaxProcesses = 10;
        });
        services.AddFileCapture(o => o.WatchedPrefixes = ["/srv/secrets"]);
        services.AddSingleton<SensorStatusReporter>();
        using var provider = services.BuildServiceProvider();

        var processes = provider.GetRequiredService<ProcessCapture>();
        var files = provider.GetRequiredService<FileCapture>();
        provider.GetServices<IHostedService>().Should().BeEquivalentTo(new IHostedService[] { processes, files });
        provider.GetServices<ICaptureStatus>().Should().BeEquivalentTo(new ICaptureStatus[] { processes, files });
        provider.GetRequiredService<SensorEventQueue>().Should().BeSameAs(queue, "an existing queue is kept");
        provider.GetRequiredService<ProcessTable>().Should().BeSameAs(provider.GetRequiredService<ProcessTable>());
        provider.GetRequiredService<IOptions<ProcessCaptureOptions>>().Value.Node.Should().Be("node-7");
        provider.GetRequiredService<IOptions<FileCaptureOptions>>().Value.WatchedPrefixes.Should().Equal("/srv/secrets");

        var status = provider.GetRequiredService<SensorStatusReporter>().Snapshot();
        status.Capture.Select(c => (c.Signal, c.State)).Should().BeEquivalentTo(new[] { ("process", "unavailable"), ("file", "unavailable") });
        status.Counters.Keys.Should().Contain(new[] { "process_execs", "process_exits", "process_table_size", "file_events_emitted", "file_ringbuf_dropped" });
    }

    [Fact]
    public void Each_capture_alone_supplies_a_queue_and_file_defaults_watch_the_usual_prefixes()
    {
        using var p = new ServiceCollection().AddLogging().AddProcessCapture().BuildServiceProvider();
        using var f = new ServiceCollection().AddLogging().AddFileCapture().BuildServiceProvider();

        p.GetRequiredService<ProcessCapture>().Should().NotBeNull();
        p.GetRequiredService<SensorEventQueue>().Should().NotBeNull();
        f.GetRequiredService<FileCapture>().Should().NotBeNull("the process table is optional");
        f.GetRequiredService<IOptions<FileCaptureOptions>>().Value.WatchedPrefixes
            .Should().Contain(new[] { "/etc", "/root", "/var/run/secrets", "/bin", "/usr/bin", "/home/" });
    }
}
