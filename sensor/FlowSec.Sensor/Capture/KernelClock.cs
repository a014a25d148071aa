using System.Diagnostics;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// The kernel's <c>bpf_ktime_get_ns()</c> is CLOCK_MONOTONIC. On Linux, .NET's
/// <see cref="Stopwatch"/> reads the same clock (clock_gettime(CLOCK_MONOTONIC), 1 ns ticks;
/// KernelClockTests checks this), so "now" in kernel time is a Stopwatch reading, and a wall-clock
/// offset captured once converts kernel timestamps to Unix time.
/// </summary>
internal static class KernelClock
{
    /// <summary>Current CLOCK_MONOTONIC time in nanoseconds, comparable with kernel timestamps.</summary>
    public static long NowNs()
    {
        long ticks = Stopwatch.GetTimestamp();
        return Stopwatch.Frequency == 1_000_000_000
            ? ticks
            : (long)(ticks * (1_000_000_000.0 / Stopwatch.Frequency));
    }

    /// <summary>Unix time in ns minus monotonic time in ns, now: add it to a kernel timestamp.</summary>
    public static long UnixOffsetNs()
    {
        long unixNs = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;
        return unixNs - NowNs();
    }
}
