using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace FlowSec.Tests.Sensor.Udp;

/// <summary>The registration extensions wire both captures as hosted services and status parts (nothing is started).</summary>
public class UdpDropRegistrationTests
{
    [Fact]
    public void Both_captures_are_hosted_services_and_capture_status_parts_bound_from_configuration()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Sensor:Udp:DrainInterval"] = "00:00:02",
            ["Sensor:Udp:CgroupPath"] = "/sys/fs/cgroup/unified/kubepods",
            ["Sensor:Udp:MaxFlows"] = "1024",
            ["Sensor:Drops:DrainInterval"] = "00:00:00.500",
        }).Build();
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSingleton<SensorEventQueue>();
        // As in Program.cs:
        services.AddUdpFlowCapture(o => config.GetSection("Sensor:Udp").Bind(o));
        services.AddDropCapture(o => config.GetSection("Sensor:Drops").Bind(o));
        using var provider = services.BuildServiceProvider();

        var udp = provider.GetRequiredService<UdpFlowCapture>();
        var drops = provider.GetRequiredService<DropCapture>();
        provider.GetServices<IHostedService>().Should().Contain([udp, drops]);
        provider.GetServices<ICaptureStatus>().Should().Contain([udp, drops]);
        provider.GetRequiredService<IOptions<UdpFlowOptions>>().Value.Should().BeEquivalentTo(new UdpFlowOptions
        {
            DrainInterval = TimeSpan.FromSeconds(2),
            CgroupPath = "/sys/fs/cgroup/unified/kubepods",
            MaxFlows = 1024,
        });
        provider.GetRequiredService<IOptions<DropCaptureOptions>>().Value.DrainInterval.Should().Be(TimeSpan.FromMilliseconds(500));
        udp.CapturePaths().Should().ContainSingle().Which.Signal.Should().Be("udp");
        drops.CapturePaths().Should().ContainSingle().Which.State.Should().Be("unavailable", "not started");
        drops.CapturePaths().Single().Signal.Should().Be("drops");
    }
}
