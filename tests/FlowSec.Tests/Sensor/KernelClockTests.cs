using System.Runtime.InteropServices;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor;

public partial class KernelClockTests
{
    private const int ClockMonotonic = 1;

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc.so.6", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out Timespec ts);

    [Fact]
    public void Stopwatch_reads_clock_monotonic_the_clock_of_bpf_ktime_get_ns()
    {
        ClockGetTime(ClockMonotonic, out var before).Should().Be(0);
        long ours = KernelClock.NowNs();
        ClockGetTime(ClockMonotonic, out var after).Should().Be(0);

        long beforeNs = before.Seconds * 1_000_000_000 + before.Nanoseconds;
        long afterNs = after.Seconds * 1_000_000_000 + after.Nanoseconds;
        ours.Should().BeInRange(beforeNs, afterNs);
    }

    [Fact]
    public void Unix_offset_turns_monotonic_now_into_wall_clock_now()
    {
        long unixNow = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;

        long converted = KernelClock.NowNs() + KernelClock.UnixOffsetNs();

        converted.Should().BeCloseTo(unixNow, 50_000_000);
    }
}
