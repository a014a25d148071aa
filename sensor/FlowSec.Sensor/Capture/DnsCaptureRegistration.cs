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
    /// if none is registered yet.
    /// </summary>
    public static IServiceCollection AddDnsCapture(this IServiceCollection services, Action<DnsCaptureOptions>? configure = null)
    {
        services.TryAddSingleton<DnsNameCache>();
        services.TryAddSingleton<IEndpointNames>(sp => sp.GetRequiredService<DnsNameCache>());
        return services.AddBpfCapture<DnsCapture, DnsCaptureOptions>(configure);
    }
}
