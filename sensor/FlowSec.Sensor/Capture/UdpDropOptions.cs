namespace FlowSec.Sensor.Capture;

/// <summary>Settings of the UDP flow capture (bind from configuration or set in code).</summary>
public sealed class UdpFlowOptions
{
    /// <summary>
    /// cgroup v2 directory the programs attach to; they see the sockets of its whole subtree, so a
    /// sensor can be scoped to, say, the kubepods slice. Default (null): the cgroup v2 mount root.
    /// </summary>
    public string? CgroupPath { get; set; }

    /// <summary>How often the kernel's flow table is read; each flow with traffic yields one event per interval. Default 1 s.</summary>
    public TimeSpan DrainInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// A flow without packets for this long is deleted from the kernel table. Longer than the
    /// interval so a flow with pauses (heartbeats, QUIC) keeps its start and direction; the
    /// kernel table is an LRU, so a long timeout cannot exhaust it. Default 10 s.
    /// </summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Size of the kernel's flow table (LRU: past it the least recently used flow is evicted and counted). Default 65536.</summary>
    public uint MaxFlows { get; set; } = 65536;
}

/// <summary>Settings of the packet drop capture.</summary>
public sealed class DropCaptureOptions
{
    /// <summary>How often the kernel's drop aggregates are read and emptied. Default 1 s.</summary>
    public TimeSpan DrainInterval { get; set; } = TimeSpan.FromSeconds(1);
}

/// <summary>Finds the cgroup v2 mount (<c>/sys/fs/cgroup</c> on unified hosts, <c>/sys/fs/cgroup/unified</c> on hybrid ones).</summary>
internal static class CgroupV2
{
    /// <summary>The first cgroup2 mount point in <paramref name="mountsPath"/>; null when there is none.</summary>
    public static string? MountPoint(string mountsPath = "/proc/self/mounts")
    {
        foreach (string line in File.ReadLines(mountsPath))
        {
            string[] fields = line.Split(' ');
            if (fields.Length > 2 && fields[2] == "cgroup2")
            {
                // /proc/mounts escapes spaces and friends as octal (\040).
                return System.Text.RegularExpressions.Regex.Replace(fields[1], @"\\([0-7]{3})",
                    m => ((char)Convert.ToInt32(m.Groups[1].Value, 8)).ToString());
            }
        }
        return null;
    }
}
