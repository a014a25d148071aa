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
        // The node name comes from CaptureOptions.
        services.AddOptions<CaptureOptions>();
        return services.AddBpfCapture<UdpFlowCapture, UdpFlowOptions>(configure);
    }

    /// <summary>
    /// Registers <see cref="DropCapture"/> as a hosted service and as an
    /// <see cref="ICaptureStatus"/> (signal "drops"), plus a <see cref="SensorEventQueue"/> if none
    /// is registered yet.
    /// </summary>
    public static IServiceCollection AddDropCapture(this IServiceCollection services, Action<DropCaptureOptions>? configure = null)
    {
        // The node name comes from CaptureOptions.
        services.AddOptions<CaptureOptions>();
        return services.AddBpfCapture<DropCapture, DropCaptureOptions>(configure);
    }
}
