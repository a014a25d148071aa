using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using FlowSec.Sensor.Export;

namespace FlowSec.Sensor.Capture;

/// <summary>Wiring of the kernel capture into the sensor host.</summary>
public static class SensorCapture
{
    /// <summary>
    /// Registers <see cref="TcpCapture"/> as a hosted service and as an <see cref="ICaptureStatus"/>
    /// (which <see cref="SensorStatusReporter"/> collects), plus a <see cref="SensorEventQueue"/>
    /// if none is registered yet.
    /// </summary>
    public static IServiceCollection AddTcpCapture(this IServiceCollection services, Action<CaptureOptions>? configure = null)
    {
        services.AddOptions<CaptureOptions>();
        if (configure is not null)
        {
            services.Configure(configure);
        }
        services.TryAddSingleton<SensorEventQueue>(_ => new SensorEventQueue());
        services.TryAddSingleton<TcpCapture>();
        services.AddSingleton<ICaptureStatus>(sp => sp.GetRequiredService<TcpCapture>());
        services.AddHostedService(sp => sp.GetRequiredService<TcpCapture>());
        return services;
    }
}
