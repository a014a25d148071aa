using System.Collections.Concurrent;
using System.Globalization;

namespace FlowSec.Sensor.Attribution;

/// <summary>
/// The part of the host this sensor speaks for. Unscoped (the default) it is the whole host; scoped
/// to a cgroup v2 directory (<c>--Sensor:Cgroup</c>) it is the processes and sockets in that
/// subtree, so several sensors on one machine behave like several nodes (tests, demos, and hosts
/// shared by tenants). An event belongs to the scope when one of its endpoints carries a cgroup id
/// of the subtree; an event without any cgroup (a packet dropped in softirq) belongs when it
/// happened in a network namespace that a process of the subtree lives in.
/// </summary>
/// <remarks>
/// Cgroup v2 ids are directory inode numbers and are never reused while the hierarchy is mounted,
/// so an id once seen outside the subtree stays outside: those are remembered, and only ids never
/// seen trigger a walk of the subtree (one walk per new cgroup, of the subtree only). That keeps
/// the per-event cost to one or two hash lookups, which the <c>scope</c> benchmark measures.
/// </remarks>
public sealed class CgroupScope
{
    /// <summary>Shortest time between two reads of the subtree's network namespaces.</summary>
    public static readonly TimeSpan NetnsRescanInterval = TimeSpan.FromSeconds(1);

    private const int MaxOutside = 65_536;
    private readonly Lock _scanLock = new();
    private readonly ConcurrentDictionary<ulong, byte> _outside = new();
    private volatile HashSet<ulong> _inside = [];
    private volatile HashSet<ulong> _netns = [];
    private long _lastNetnsScanTicks = long.MinValue / 2;
    private long _skipped;

    /// <summary>The whole host: every event belongs.</summary>
    public static CgroupScope Host { get; } = new(null);

    private CgroupScope(string? directory)
    {
        Directory = directory;
        if (directory is not null)
        {
            Rescan();
            RescanNetns();
        }
    }

    /// <summary>The scope's cgroup v2 directory (absolute), or null for the whole host.</summary>
    public string? Directory { get; }

    /// <summary>Whether the sensor speaks for a subtree only.</summary>
    public bool IsScoped => Directory is not null;

    /// <summary>Events left out because they belong to another part of the host.</summary>
    public long Skipped => Interlocked.Read(ref _skipped);

    /// <summary>
    /// The scope for <paramref name="cgroup"/>: empty means the whole host; otherwise an absolute
    /// path inside the cgroup v2 mount <paramref name="cgroupRoot"/>, or a path relative to it.
    /// </summary>
    /// <exception cref="ArgumentException">The directory is not a cgroup v2 directory; the message says why.</exception>
    public static CgroupScope For(string? cgroup, string cgroupRoot)
    {
        if (string.IsNullOrWhiteSpace(cgroup))
        {
            return Host;
        }
        var root = Path.GetFullPath(cgroupRoot).TrimEnd('/');
        var path = Path.GetFullPath(cgroup.StartsWith('/') ? cgroup : Path.Combine(root, cgroup)).TrimEnd('/');
        if (path != root && !path.StartsWith(root + "/", StringComparison.Ordinal))
        {
            throw new ArgumentException($"--Sensor:Cgroup {cgroup}: not inside the cgroup v2 hierarchy at {root}");
        }
        if (!File.Exists(Path.Combine(path, "cgroup.procs")))
        {
            throw new ArgumentException($"--Sensor:Cgroup {cgroup}: {path} is not a cgroup v2 directory (no cgroup.procs)");
        }
        return path == root ? Host : new CgroupScope(path);
    }

    /// <summary>
    /// Whether <paramref name="e"/> belongs to this scope; counts it as skipped when not.
    /// <paramref name="netns"/> is the network namespace the event happened in, when the capture
    /// knows it (0 otherwise): it decides for events that carry no cgroup id.
    /// </summary>
    public bool Admits(FlowSec.Api.V1.Event e, uint netns = 0)
    {
        if (Directory is null)
        {
            return true;
        }
        var source = e.Source?.CgroupId ?? 0;
        var destination = e.Destination?.CgroupId ?? 0;
        var admitted = source == 0 && destination == 0
            ? netns != 0 && ContainsNetns(netns)
            : Contains(source) || Contains(destination);
        if (!admitted)
        {
            Interlocked.Increment(ref _skipped);
        }
        return admitted;
    }

    /// <summary>Whether the cgroup <paramref name="cgroupId"/> is the scope's directory or below it.</summary>
    public bool Contains(ulong cgroupId)
    {
        if (Directory is null)
        {
            return true;
        }
        if (_inside.Contains(cgroupId))
        {
            return true;
        }
        if (cgroupId == 0 || _outside.ContainsKey(cgroupId))
        {
            return false;
        }
        // Never seen: a cgroup created since the last walk, or one outside the subtree. The event
        // carrying it was made before this walk starts, so after the walk the answer is final.
        lock (_scanLock)
        {
            if (!_inside.Contains(cgroupId))
            {
                Rescan();
            }
        }
        if (_inside.Contains(cgroupId))
        {
            return true;
        }
        if (_outside.Count >= MaxOutside)
        {
            _outside.Clear();
        }
        _outside[cgroupId] = 0;
        return false;
    }

    private bool ContainsNetns(uint netns)
    {
        if (_netns.Contains(netns))
        {
            return true;
        }
        lock (_scanLock)
        {
            if (Environment.TickCount64 - _lastNetnsScanTicks >= NetnsRescanInterval.TotalMilliseconds)
            {
                RescanNetns();
            }
        }
        return _netns.Contains(netns);
    }

    // Both scans run under _scanLock (or in the constructor) and publish a new set at once.
    private void Rescan()
    {
        var inside = new HashSet<ulong>();
        foreach (var dir in Subtree())
        {
            var id = CgroupResolver.Inode(dir);
            if (id != 0)
            {
                inside.Add(id);
            }
        }
        _inside = inside;
    }

    private void RescanNetns()
    {
        _lastNetnsScanTicks = Environment.TickCount64;
        var netns = new HashSet<ulong>();
        foreach (var dir in Subtree())
        {
            string[] pids;
            try
            {
                pids = File.ReadAllLines(Path.Combine(dir, "cgroup.procs"));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                continue; // removed while we walk
            }
            foreach (var pid in pids)
            {
                if (int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out var p))
                {
                    // stat follows the ns magic link to the nsfs inode: the number the kernel reports as ns.inum.
                    var inode = CgroupResolver.Inode($"/proc/{p}/ns/net");
                    if (inode != 0)
                    {
                        netns.Add(inode);
                    }
                }
            }
        }
        _netns = netns;
    }

    private IEnumerable<string> Subtree()
    {
        var pending = new Stack<string>();
        pending.Push(Directory!);
        while (pending.Count > 0)
        {
            var dir = pending.Pop();
            yield return dir;
            string[] children;
            try
            {
                children = System.IO.Directory.GetDirectories(dir);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                continue; // removed while we walk
            }
            foreach (var child in children)
            {
                pending.Push(child);
            }
        }
    }
}
