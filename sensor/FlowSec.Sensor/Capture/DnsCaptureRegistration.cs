using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Dns;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace FlowSec.Sensor.Capture;

/// <summary>Wiring of the DNS capture into the sensor host.</summary>
public static class DnsCaptureRegistration
{
    /// <summary>
    /// Registers <see cref="DnsCapture"/> as a hosted service and as an <see cref="ICaptureStatus"/>,
    /// the <see cref="DnsNameCache"/> as a singleton and as the <see cref="IEndpointNames"/> the
    /// <see cref="EndpointEnricher"/> uses to name flow endpoints, plus a <see cref="SensorEventQueue"/>
    /// if none is registered yet. Validates <see cref="DnsCaptureOptions.EgressProgram"/> when the host starts.
    /// </summary>
    public static IServiceCollection AddDnsCapture(this IServiceCollection services, Action<DnsCaptureOptions>? configure = null)
    {
        // A bad --Sensor:Dns:EgressProgram stops the host at start, with the accepted values.
        services.AddOptions<DnsCaptureOptions>()
            .Validate(o => DnsEgressPrograms.TryParseMode(o.EgressProgram, out _), $"--Sensor:Dns:EgressProgram must be {DnsEgressPrograms.ModeValues}")
            .ValidateOnStart();
        services.TryAddSingleton<DnsNameCache>();
        services.TryAddSingleton<IEndpointNames>(sp => sp.GetRequiredService<DnsNameCache>());
        return services.AddBpfCapture<DnsCapture, DnsCaptureOptions>(configure);
    }
}
