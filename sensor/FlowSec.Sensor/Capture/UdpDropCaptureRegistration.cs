using FlowSec.Sensor.Export;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace FlowSec.Sensor.Capture;

/// <summary>Wiring of the UDP flow and packet drop captures into the sensor host.</summary>
public static class UdpDropCaptureRegistration
{
    /// <summary>
    /// Registers <see cref="UdpFlowCapture"/> as a hosted service and as an
    /// <see cref="ICaptureStatus"/> (signal "udp"), plus a <see cref="SensorEventQueue"/> if none
    /// is registered yet. The node name comes from <see cref="CaptureOptions"/>.
    /// </summary>
    public static IServiceCollection AddUdpFlowCapture(this IServiceCollection services, Action<UdpFlowOptions>? configure = null)
    {
        services.AddOptions<CaptureOptions>();
        services.AddOptions<UdpFlowOptions>();
        if (configure is not null)
        {
            services.Configure(configure);
        }
        services.TryAddSingleton<SensorEventQueue>(_ => new SensorEventQueue());
        services.TryAddSingleton<UdpFlowCapture>();
        services.AddSingleton<ICaptureStatus>(sp => sp.GetRequiredService<UdpFlowCapture>());
        services.AddHostedService(sp => sp.GetRequiredService<UdpFlowCapture>());
        return services;
    }

    /// <summary>
    /// Registers <see cref="DropCapture"/> as a hosted service and as an
    /// <see cref="ICaptureStatus"/> (signal "drops"), plus a <see cref="SensorEventQueue"/> if none
    /// is registered yet.
    /// </summary>
    public static IServiceCollection AddDropCapture(this IServiceCollection services, Action<DropCaptureOptions>? configure = null)
    {
        services.AddOptions<CaptureOptions>();
        services.AddOptions<DropCaptureOptions>();
        if (configure is not null)
        {
            services.Configure(configure);
        }
        services.TryAddSingleton<SensorEventQueue>(_ => new SensorEventQueue());
        services.TryAddSingleton<DropCapture>();
        services.AddSingleton<ICaptureStatus>(sp => sp.GetRequiredService<DropCapture>());
        services.AddHostedService(sp => sp.GetRequiredService<DropCapture>());
        return services;
    }
}
