using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Dns;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace FlowSec.Tests.Sensor.Dns;

public class DnsCaptureRegistrationTests
{
    [Fact]
    public void AddDnsCapture_registers_the_capture_the_name_cache_and_their_interfaces()
    {
        var services = new ServiceCollection().AddLogging();
        services.AddSingleton<SensorEventQueue>();
        services.AddTcpCapture();

        services.AddDnsCapture(o =>
        {
            o.CgroupPath = "/sys/fs/cgroup/unified/some-subtree";
            o.NameCacheCapacity = 10;
        });
        using var provider = services.BuildServiceProvider();

        var capture = provider.GetRequiredService<DnsCapture>();
        provider.GetServices<IHostedService>().Should().Contain(capture).And.Contain(provider.GetRequiredService<TcpCapture>());
        provider.GetServices<ICaptureStatus>().Should().Contain(capture).And.HaveCount(2);
        var names = provider.GetRequiredService<DnsNameCache>();
        provider.GetRequiredService<IEndpointNames>().Should().BeSameAs(names);
        names.Capacity.Should().Be(10);
        capture.CgroupPath.Should().Be("/sys/fs/cgroup/unified/some-subtree");
        capture.CapturePaths().Should().ContainSingle().Which.State.Should().Be("unavailable", "not started");
    }

    [Fact]
    public void Default_cgroup_is_the_cgroup2_mount()
    {
        var capture = new DnsCapture(new SensorEventQueue(), new DnsNameCache(Options.Create(new DnsCaptureOptions())),
            Options.Create(new DnsCaptureOptions()), LoggerFactory.Create(_ => { }).CreateLogger<DnsCapture>());

        capture.CgroupPath.Should().Be("/sys/fs/cgroup/unified", "this host mounts cgroup v2 there (hybrid hierarchy)");
        var counters = new Dictionary<string, ulong>();
        capture.AddCounters(counters);
        counters.Keys.Should().Contain(["dns_records_decoded", "dns_records_malformed", "dns_ringbuf_dropped", "dns_queries_unanswered"]);
    }
}
