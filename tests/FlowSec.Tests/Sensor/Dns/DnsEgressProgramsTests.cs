using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace FlowSec.Tests.Sensor.Dns;

/// <summary>The choice between the DNS egress programs, and its override option.</summary>
public class DnsEgressProgramsTests
{
    [Fact]
    public void Auto_picks_the_helpers_program_where_cgroup_skb_has_every_helper()
    {
        var asked = new List<BpfHelper>();
        var choice = DnsEgressPrograms.Choose(DnsEgressMode.Auto, h =>
        {
            asked.Add(h);
            return true;
        });

        choice.Program.Should().Be("dns_egress");
        choice.NotLoaded.Should().Be("dns_egress_task_read");
        choice.Reason.Should().Be("auto: cgroup_skb may call bpf_get_current_pid_tgid, bpf_get_current_cgroup_id, bpf_get_current_task_btf");
        asked.Should().Equal(BpfHelper.GetCurrentPidTgid, BpfHelper.GetCurrentCgroupId, BpfHelper.GetCurrentTaskBtf);
    }

    [Fact]
    public void Auto_picks_the_task_read_program_when_a_helper_is_missing_and_names_it()
    {
        // What Linux 6.1 answers (measured in the kernel matrix).
        var choice = DnsEgressPrograms.Choose(DnsEgressMode.Auto, h => h == BpfHelper.GetCurrentTaskBtf);

        choice.Program.Should().Be("dns_egress_task_read");
        choice.NotLoaded.Should().Be("dns_egress");
        choice.Reason.Should().Be("auto: this kernel's cgroup_skb programs lack bpf_get_current_pid_tgid, bpf_get_current_cgroup_id; sender read via bpf_get_current_task()");

        DnsEgressPrograms.Choose(DnsEgressMode.Auto, h => h != BpfHelper.GetCurrentTaskBtf).Program.Should().Be("dns_egress_task_read");
    }

    [Theory]
    [InlineData("helpers", "dns_egress", "dns_egress_task_read")]
    [InlineData("task-read", "dns_egress_task_read", "dns_egress")]
    [InlineData("TASK-READ", "dns_egress_task_read", "dns_egress")]
    public void An_override_is_honored_whatever_the_kernel_offers(string value, string program, string notLoaded)
    {
        var mode = DnsEgressPrograms.ParseMode(value);
        foreach (bool helpersThere in new[] { true, false })
        {
            var choice = DnsEgressPrograms.Choose(mode, _ => helpersThere);
            choice.Program.Should().Be(program);
            choice.NotLoaded.Should().Be(notLoaded);
            choice.Reason.Should().Be($"forced by --Sensor:Dns:EgressProgram={value.ToLowerInvariant()}");
        }
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("auto")]
    [InlineData(" Auto ")]
    public void Empty_or_auto_is_auto(string? value) => DnsEgressPrograms.ParseMode(value).Should().Be(DnsEgressMode.Auto);

    [Theory]
    [InlineData("taskread")]
    [InlineData("kprobe")]
    [InlineData("1")]
    public void A_bad_value_is_a_clear_error(string value)
    {
        DnsEgressPrograms.TryParseMode(value, out _).Should().BeFalse();
        FluentActions.Invoking(() => DnsEgressPrograms.ParseMode(value)).Should().Throw<ArgumentException>()
            .WithMessage($"--Sensor:Dns:EgressProgram must be auto, helpers or task-read, not '{value}'*");
    }

    [Fact]
    public async Task A_bad_value_stops_the_sensor_host_at_start()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["Sensor:Dns:EgressProgram"] = "task_read" });
        builder.Services.AddSingleton<SensorEventQueue>();
        builder.Services.AddDnsCapture(o => builder.Configuration.GetSection("Sensor:Dns").Bind(o));
        using var host = builder.Build();

        var start = () => host.StartAsync();

        (await start.Should().ThrowAsync<OptionsValidationException>())
            .Which.Message.Should().Contain("--Sensor:Dns:EgressProgram must be auto, helpers or task-read");
    }
}
