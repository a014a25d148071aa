using System.Diagnostics;
using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.Hosting;
using Xunit.Abstractions;

namespace FlowSec.Tests.Sensor.Processes;

/// <summary>
/// A started capture (any <see cref="BackgroundService"/> that is an <see cref="ICaptureStatus"/>)
/// and its queue. Keeps every event it has read, so waiting for one event never consumes another
/// a later wait needs: the queue also carries the rest of the machine's activity.
/// </summary>
internal sealed class CaptureHarness<T> : IAsyncDisposable where T : BackgroundService, ICaptureStatus
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(20);

    private readonly List<Event> _seen = new();
    private readonly TimeSpan _timeout;

    private CaptureHarness(T capture, SensorEventQueue queue, TimeSpan timeout)
    {
        Capture = capture;
        Queue = queue;
        _timeout = timeout;
    }

    public T Capture { get; }

    public SensorEventQueue Queue { get; }

    /// <summary>
    /// Starts <paramref name="capture"/> and waits until every capture path is active;
    /// <paramref name="timeout"/> (<see cref="DefaultTimeout"/> when null) bounds that wait and every later one.
    /// </summary>
    public static async Task<CaptureHarness<T>> StartAsync(T capture, SensorEventQueue queue, ITestOutputHelper output, TimeSpan? timeout = null)
    {
        TimeSpan limit = timeout ?? DefaultTimeout;
        await capture.StartAsync(CancellationToken.None);
        var watch = Stopwatch.StartNew();
        while (!capture.CapturePaths().All(p => p.State == "active"))
        {
            if (watch.Elapsed > limit || capture.ExecuteTask?.IsCompleted == true)
            {
                string paths = string.Join("; ", capture.CapturePaths());
                await capture.StopAsync(CancellationToken.None);
                capture.Dispose();
                throw new Xunit.Sdk.XunitException($"capture did not become active: {paths}");
            }
            await Task.Delay(10);
        }
        output.WriteLine($"{typeof(T).Name} active after {watch.ElapsedMilliseconds} ms");
        return new CaptureHarness<T>(capture, queue, limit);
    }

    /// <summary>The first event (seen before or arriving within the timeout) that matches; throws when none does.</summary>
    public async Task<Event> WaitForAsync(Func<Event, bool> match, string what)
    {
        var found = await CollectAsync(match, 1);
        return found.Count == 1 ? found[0] : throw new Xunit.Sdk.XunitException($"no event within {_timeout.TotalSeconds} s: {what}");
    }

    /// <summary>Events that match, until <paramref name="count"/> are found or the timeout passes.</summary>
    public async Task<List<Event>> CollectAsync(Func<Event, bool> match, int count)
    {
        var found = _seen.Where(match).Take(count).ToList();
        using var cts = new CancellationTokenSource(_timeout);
        try
        {
            while (found.Count < count)
            {
                var e = (await Queue.Reader.ReadAsync(cts.Token)).Event!;
                _seen.Add(e);
                if (match(e))
                {
                    found.Add(e);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        return found;
    }

    /// <summary>Every event read so far that matches.</summary>
    public IReadOnlyList<Event> Seen(Func<Event, bool> match) => _seen.Where(match).ToList();

    public async ValueTask DisposeAsync()
    {
        await Capture.StopAsync(CancellationToken.None);
        Capture.Dispose();
    }
}
