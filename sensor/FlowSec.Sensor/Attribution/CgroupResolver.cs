using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Attribution;

/// <summary>
/// Maps the cgroup ids the kernel reports (bpf_get_current_cgroup_id) to cgroup v2 paths. A cgroup
/// v2 id is the inode number of its directory, so a walk of the hierarchy builds the map; ids not
/// yet known trigger a rescan, at most once per <see cref="RescanInterval"/> so a flood of unknown
/// ids cannot turn into a flood of directory walks.
/// </summary>
public sealed partial class CgroupResolver(string root)
{
    /// <summary>The cgroup v2 mount on hybrid hosts (Debian 12 default); /sys/fs/cgroup on pure v2 hosts.</summary>
    public static string DefaultRoot =>
        File.Exists("/sys/fs/cgroup/unified/cgroup.procs") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup";

    /// <summary>Shortest time between two walks of the hierarchy.</summary>
    public static readonly TimeSpan RescanInterval = TimeSpan.FromMilliseconds(100);

    private const int MaxEntries = 65_536;
    private readonly ConcurrentDictionary<ulong, string> _paths = new();
    private long _lastScanTicks = Environment.TickCount64 - 60_000;

    /// <summary>Creates a resolver for the default cgroup v2 mount.</summary>
    public CgroupResolver() : this(DefaultRoot)
    {
    }

    /// <summary>The path of a cgroup relative to the mount ("/" for the root, "/kubepods.slice/…"), or null if unknown.</summary>
    public string? PathOf(ulong cgroupId)
    {
        if (cgroupId == 0)
        {
            return null;
        }
        if (_paths.TryGetValue(cgroupId, out var path))
        {
            return path;
        }
        var now = Environment.TickCount64;
        var last = Interlocked.Read(ref _lastScanTicks);
        if (now - last < RescanInterval.TotalMilliseconds || Interlocked.CompareExchange(ref _lastScanTicks, now, last) != last)
        {
            return null;
        }
        Rescan();
        return _paths.TryGetValue(cgroupId, out path) ? path : null;
    }

    private void Rescan()
    {
        if (_paths.Count > MaxEntries)
        {
            _paths.Clear();
        }
        var pending = new Stack<string>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            var dir = pending.Pop();
            var inode = Inode(dir);
            if (inode != 0)
            {
                var relative = dir.Length == root.Length ? "/" : dir[root.Length..];
                _paths[inode] = relative;
            }
            try
            {
                foreach (var child in Directory.EnumerateDirectories(dir))
                {
                    pending.Push(child);
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // A cgroup removed while we walk: skip it.
            }
        }
    }

    /// <summary>The inode number of a path, or 0 when it cannot be read.</summary>
    public static unsafe ulong Inode(string path)
    {
        // struct stat on x86_64/aarch64 glibc: st_dev (8 bytes) then st_ino (8 bytes).
        var buffer = stackalloc byte[256];
        return Stat(path, buffer) == 0 ? *(ulong*)(buffer + 8) : 0;
    }

    [LibraryImport("libc", EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int Stat(string path, byte* buffer);
}
