using System.Globalization;
using System.Runtime.InteropServices;
using FlowSec.Sensor.Capture;

namespace FlowSec.Sensor.Processes;

/// <summary>
/// Reads what the process table needs from procfs (<c>/proc/&lt;pid&gt;/stat</c>, <c>status</c>,
/// <c>exe</c>, <c>cmdline</c>): for processes that started before the sensor, or that forked
/// without exec (the kernel side only reports execs).
/// </summary>
internal static partial class ProcFs
{
    private const int ClockBoottime = 7;
    private const int ScClkTck = 2;

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc.so.6", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out Timespec time);

    [LibraryImport("libc.so.6", EntryPoint = "sysconf")]
    private static partial long SysConf(int name);

    private static readonly long s_ticksPerSecond = Math.Max(1, SysConf(ScClkTck));

    /// <summary>
    /// Reads process <paramref name="pid"/> under <paramref name="procRoot"/>; null when it is
    /// gone (or never existed). Kernel threads have no exe and no arguments.
    /// </summary>
    public static ProcessEntry? TryRead(string procRoot, uint pid)
    {
        string dir = Path.Combine(procRoot, pid.ToString(CultureInfo.InvariantCulture));
        try
        {
            string stat = File.ReadAllText(Path.Combine(dir, "stat"));
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so it ends at the last ')'.
            int open = stat.IndexOf('('), close = stat.LastIndexOf(')');
            if (open < 0 || close < open)
            {
                return null;
            }
            string comm = stat[(open + 1)..close];
            string[] fields = stat[(close + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            // fields[0] is field 3 (state) of proc_pid_stat(5): ppid is field 4, starttime field 22.
            if (fields.Length < 20)
            {
                return null;
            }
            uint ppid = uint.Parse(fields[1], CultureInfo.InvariantCulture);
            ulong startTicks = ulong.Parse(fields[19], CultureInfo.InvariantCulture);
            return new ProcessEntry(pid, ppid, EffectiveUid(dir), comm, Exe(dir), Args(dir), BootTicksToMonotonicNs(startTicks));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or OverflowException)
        {
            return null;
        }
    }

    /// <summary>The process ids under <paramref name="procRoot"/>.</summary>
    public static IEnumerable<uint> Pids(string procRoot)
    {
        foreach (string dir in Directory.EnumerateDirectories(procRoot))
        {
            if (uint.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out uint pid))
            {
                yield return pid;
            }
        }
    }

    /// <summary>The target of <c>/proc/&lt;pid&gt;/exe</c>; "" when unreadable (kernel threads, zombies).</summary>
    public static string Exe(string processDir)
    {
        try
        {
            return new FileInfo(Path.Combine(processDir, "exe")).LinkTarget ?? "";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "";
        }
    }

    // Effective uid, as exec records carry it (the second column of "Uid:").
    private static uint EffectiveUid(string dir)
    {
        foreach (string line in File.ReadLines(Path.Combine(dir, "status")))
        {
            if (line.StartsWith("Uid:", StringComparison.Ordinal))
            {
                string[] ids = line[4..].Split('\t', ' ', StringSplitOptions.RemoveEmptyEntries);
                return ids.Length > 1 ? uint.Parse(ids[1], CultureInfo.InvariantCulture) : 0;
            }
        }
        return 0;
    }

    // Bounded like the kernel side: the first 1 KiB, at most MaxArgs arguments.
    private static IReadOnlyList<string> Args(string dir)
    {
        using var stream = File.OpenRead(Path.Combine(dir, "cmdline"));
        var buffer = new byte[FsExecRecord.ArgsLength];
        int length = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        return ProcessRecordDecoder.SplitArgs(buffer.AsSpan(0, length), ProcessRecordDecoder.MaxArgs, out _);
    }

    /// <summary>
    /// /proc's starttime counts clock ticks since boot on CLOCK_BOOTTIME; kernel records use
    /// CLOCK_MONOTONIC, which stops during suspend. Converted with today's difference of the two:
    /// exact unless the host was suspended since the process started, and 10 ms coarse.
    /// </summary>
    public static ulong BootTicksToMonotonicNs(ulong ticks)
    {
        ClockGetTime(ClockBoottime, out Timespec boot);
        long bootNs = boot.Seconds * 1_000_000_000 + boot.Nanoseconds;
        long suspendedNs = bootNs - KernelClock.NowNs();
        long startNs = (long)(ticks * (1_000_000_000UL / (ulong)s_ticksPerSecond)) - suspendedNs;
        return startNs > 0 ? (ulong)startNs : 0;
    }
}
