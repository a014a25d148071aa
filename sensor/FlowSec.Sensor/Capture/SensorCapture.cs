using System.Diagnostics.CodeAnalysis;
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
    public static IServiceCollection AddTcpCapture(this IServiceCollection services, Action<CaptureOptions>? configure = null) =>
        services.AddBpfCapture<TcpCapture, CaptureOptions>(configure);

    /// <summary>
    /// Registers <typeparamref name="TCapture"/> once, as a hosted service and as an
    /// <see cref="ICaptureStatus"/> (the same instance), its <typeparamref name="TOptions"/>
    /// (applying <paramref name="configure"/> when given), and a <see cref="SensorEventQueue"/> if
    /// none is registered yet. Every capture registration goes through here.
    /// </summary>
    internal static IServiceCollection AddBpfCapture<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TCapture, TOptions>(this IServiceCollection services, Action<TOptions>? configure)
        where TCapture : BpfCapture
        where TOptions : class
    {
        services.AddOptions<TOptions>();
        if (configure is not null)
        {
            services.Configure(configure);
        }
        services.TryAddSingleton<SensorEventQueue>(_ => new SensorEventQueue());
        services.TryAddSingleton<TCapture>();
        services.AddSingleton<ICaptureStatus>(sp => sp.GetRequiredService<TCapture>());
        services.AddHostedService(sp => sp.GetRequiredService<TCapture>());
        return services;
    }
}
