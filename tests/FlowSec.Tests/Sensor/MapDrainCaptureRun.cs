using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;

namespace FlowSec.Tests.Sensor;

/// <summary>
/// A started <see cref="MapDrainCapture"/> (UDP flows, drops) with its queue and a count of its
/// drains; disposing stops it.
/// </summary>
internal sealed class MapDrainCaptureRun<T> : IAsyncDisposable where T : MapDrainCapture
{
    private MapDrainCaptureRun(T capture, SensorEventQueue queue, DrainCounter drains)
    {
        Capture = capture;
        Queue = queue;
        Drains = drains;
    }

    public T Capture { get; }

    public SensorEventQueue Queue { get; }

    public DrainCounter Drains { get; }

    /// <summary>
    /// Starts <paramref name="capture"/> (which enqueues to <paramref name="queue"/>) and waits up to
    /// <paramref name="timeout"/> until every path is active; <paramref name="what"/> names it in the failure.
    /// </summary>
    public static async Task<MapDrainCaptureRun<T>> StartAsync(T capture, SensorEventQueue queue, TimeSpan timeout, string what)
    {
        var drains = new DrainCounter();
        capture.Drained += drains.OnDrained;
        await capture.StartAsync(CancellationToken.None);
        try
        {
            await KernelProbe.WaitUntilAsync(
                () => Task.FromResult(capture.CapturePaths().All(p => p.State == "active") || capture.ExecuteTask?.IsCompleted == true),
                timeout, $"{what} to become active");
            capture.CapturePaths().Should().OnlyContain(p => p.State == "active", string.Join("; ", capture.CapturePaths()));
        }
        catch
        {
            await capture.StopAsync(CancellationToken.None);
            capture.Dispose();
            throw;
        }
        return new MapDrainCaptureRun<T>(capture, queue, drains);
    }

    public async ValueTask DisposeAsync()
    {
        await Capture.StopAsync(CancellationToken.None);
        Capture.Dispose();
    }
}
