namespace FlowSec.Sensor.Processes;

/// <summary>What the sensor knows about one process.</summary>
/// <param name="Pid">Process id (thread group id).</param>
/// <param name="Ppid">Parent's process id when last seen.</param>
/// <param name="Uid">Effective uid.</param>
/// <param name="Comm">Process name (up to 15 bytes, as the kernel keeps it).</param>
/// <param name="Exe">Executable path: what execve was given, or /proc's exe link; "" when unknown.</param>
/// <param name="Args">The first arguments.</param>
/// <param name="StartNs">Fork time, kernel CLOCK_MONOTONIC ns (coarse for processes read from /proc).</param>
public sealed record ProcessEntry(uint Pid, uint Ppid, uint Uid, string Comm, string Exe, IReadOnlyList<string> Args, ulong StartNs)
{
    /// <summary>Kernel monotonic time it exited; null while it runs.</summary>
    public ulong? ExitedNs { get; init; }
}

/// <summary>
/// Processes of this host by pid: seeded from /proc at start (so processes older than the sensor
/// have names), then kept current from exec and exit records. Gives exec events their parent's
/// exe and exit events the exe and arguments of the process that ended.
/// </summary>
/// <remarks>
/// Bounded: an exited process stays <c>exitedRetention</c> (events about it may still be in
/// flight on other ring buffers), then goes. When the table is full the oldest exited entries go
/// first (counted in <see cref="Evicted"/>); if only running processes remain, a new one is not
/// stored (counted in <see cref="Refused"/>). Thread-safe: the process capture writes it while
/// other captures read it.
/// </remarks>
public sealed class ProcessTable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<uint, ProcessEntry> _byPid = new();
    // Exits in order, so sweeping and making room look at the oldest first.
    private readonly Queue<(uint Pid, ulong StartNs, ulong ExitedNs)> _exits = new();
    private readonly int _capacity;
    private readonly ulong _retentionNs;
    private readonly string _procRoot;
    private long _evicted, _refused;

    /// <summary>Creates an empty table; <paramref name="procRoot"/> is where /proc is (tests use a fake one).</summary>
    public ProcessTable(int capacity = 65_536, TimeSpan? exitedRetention = null, string procRoot = "/proc")
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        _capacity = capacity;
        _retentionNs = (ulong)(exitedRetention ?? TimeSpan.FromSeconds(5)).Ticks * 100;
        _procRoot = procRoot;
    }

    /// <summary>Entries held (running and recently exited).</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _byPid.Count;
            }
        }
    }

    /// <summary>Exited entries dropped before their retention ended, to make room.</summary>
    public long Evicted => Interlocked.Read(ref _evicted);

    /// <summary>Processes not stored because the table was full of running ones.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>
    /// Adds every process in /proc that the table does not know yet (an exec seen meanwhile is
    /// fresher than /proc and is kept). Returns how many were added.
    /// </summary>
    public int Seed()
    {
        int added = 0;
        foreach (uint pid in ProcFs.Pids(_procRoot))
        {
            if (ProcFs.TryRead(_procRoot, pid) is { } entry)
            {
                lock (_lock)
                {
                    if (!_byPid.ContainsKey(pid) && TryMakeRoom())
                    {
                        _byPid[pid] = entry;
                        added++;
                    }
                }
            }
        }
        return added;
    }

    /// <summary>The entry for <paramref name="pid"/>, running or recently exited; null when unknown.</summary>
    public ProcessEntry? Find(uint pid)
    {
        lock (_lock)
        {
            return _byPid.GetValueOrDefault(pid);
        }
    }

    /// <summary>
    /// As <see cref="Find"/>, falling back to /proc for a running process the table has not
    /// seen: one that forked without exec (a shell's subshell) since the table was seeded.
    /// </summary>
    public ProcessEntry? FindOrLoad(uint pid)
    {
        if (Find(pid) is { } known)
        {
            return known;
        }
        if (pid == 0 || ProcFs.TryRead(_procRoot, pid) is not { } loaded)
        {
            return null;
        }
        lock (_lock)
        {
            if (_byPid.TryGetValue(pid, out var raced))
            {
                return raced;
            }
            if (TryMakeRoom())
            {
                _byPid[pid] = loaded;
            }
            return loaded;
        }
    }

    /// <summary>Records an exec: the process now runs <paramref name="entry"/>'s image.</summary>
    public void Exec(ProcessEntry entry)
    {
        lock (_lock)
        {
            if (_byPid.ContainsKey(entry.Pid) || TryMakeRoom())
            {
                _byPid[entry.Pid] = entry;
            }
        }
    }

    /// <summary>
    /// Records that process <paramref name="pid"/> (forked at <paramref name="startNs"/>) exited
    /// at <paramref name="exitedNs"/>, and returns its entry; null when the table did not know it.
    /// <paramref name="duplicate"/> is set when this exit was already recorded (kernels before
    /// 6.16 may report a process's end from two threads).
    /// </summary>
    public ProcessEntry? Exit(uint pid, ulong startNs, ulong exitedNs, out bool duplicate)
    {
        duplicate = false;
        lock (_lock)
        {
            if (!_byPid.TryGetValue(pid, out var entry))
            {
                return null;
            }
            // Start times identify a process across pid reuse (coarse for entries read from /proc).
            bool same = startNs == 0 || entry.StartNs == 0 || AbsDiff(entry.StartNs, startNs) < 20_000_000;
            if (entry.ExitedNs is not null)
            {
                duplicate = same;
                return same ? entry : null;
            }
            if (!same)
            {
                // An earlier process with this pid whose exit was lost; this one never exec'd.
                _byPid.Remove(pid);
                return null;
            }
            var exited = entry with { ExitedNs = exitedNs };
            _byPid[pid] = exited;
            _exits.Enqueue((pid, exited.StartNs, exitedNs));
            return exited;
        }
    }

    /// <summary>Removes processes that exited more than the retention before <paramref name="nowNs"/>; returns how many.</summary>
    public int Sweep(ulong nowNs)
    {
        int removed = 0;
        lock (_lock)
        {
            while (_exits.TryPeek(out var oldest) && oldest.ExitedNs + _retentionNs <= nowNs)
            {
                _exits.Dequeue();
                removed += RemoveIfStill(oldest) ? 1 : 0;
            }
        }
        return removed;
    }

    // Caller holds the lock. Room for one more: drop the oldest exited entries if needed.
    private bool TryMakeRoom()
    {
        while (_byPid.Count >= _capacity && _exits.TryDequeue(out var oldest))
        {
            if (RemoveIfStill(oldest))
            {
                _evicted++;
            }
        }
        if (_byPid.Count < _capacity)
        {
            return true;
        }
        _refused++;
        return false;
    }

    // The queued exit may be stale: the pid was reused by a process that exec'd since.
    private bool RemoveIfStill((uint Pid, ulong StartNs, ulong ExitedNs) exit)
    {
        if (_byPid.TryGetValue(exit.Pid, out var entry) && entry.ExitedNs == exit.ExitedNs && entry.StartNs == exit.StartNs)
        {
            _byPid.Remove(exit.Pid);
            return true;
        }
        return false;
    }

    private static ulong AbsDiff(ulong a, ulong b) => a > b ? a - b : b - a;
}
