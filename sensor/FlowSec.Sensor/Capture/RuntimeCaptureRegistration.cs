using FlowSec.Sensor.Export;
using FlowSec.Sensor.Processes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace FlowSec.Sensor.Capture;

/// <summary>Wiring of the process and file captures into the sensor host.</summary>
public static class RuntimeCaptureRegistration
{
    /// <summary>
    /// Registers <see cref="ProcessCapture"/> as a hosted service and as an
    /// <see cref="ICaptureStatus"/>, the <see cref="ProcessTable"/> it keeps (sized from
    /// <see cref="ProcessCaptureOptions"/>), and a <see cref="SensorEventQueue"/> if none is
    /// registered yet.
    /// </summary>
    public static IServiceCollection AddProcessCapture(this IServiceCollection services, Action<ProcessCaptureOptions>? configure = null)
    {
        services.TryAddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<ProcessCaptureOptions>>().Value;
            return new ProcessTable(o.MaxProcesses, o.ExitedRetention);
        });
        return services.AddBpfCapture<ProcessCapture, ProcessCaptureOptions>(configure);
    }

    /// <summary>
    /// Registers <see cref="FileCapture"/> as a hosted service and as an
    /// <see cref="ICaptureStatus"/>, plus a <see cref="SensorEventQueue"/> if none is registered
    /// yet. When <see cref="AddProcessCapture"/> is used too, file events name the acting
    /// process's exe from its <see cref="ProcessTable"/>.
    /// </summary>
    public static IServiceCollection AddFileCapture(this IServiceCollection services, Action<FileCaptureOptions>? configure = null)
    {
        return services.AddBpfCapture<FileCapture, FileCaptureOptions>(configure);
    }
}
