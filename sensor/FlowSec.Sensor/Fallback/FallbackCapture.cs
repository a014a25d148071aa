using System.Globalization;
using System.Net;
using FlowSec.Api.V1;
using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using Google.Protobuf;
using Microsoft.Extensions.Options;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Fallback;

/// <summary>
/// The lower-fidelity collector for hosts where eBPF cannot run (or a signal's program failed):
/// TCP connections by polling /proc/net/tcp{,6}, processes by polling /proc. Every event it
/// produces says <c>capture: "fallback"</c>. What it cannot see, it says: connections and
/// processes shorter than the poll interval are missed, other network namespaces are invisible,
/// and exit codes are unknown. A sensor scoped to a cgroup subtree gets no fallback: /proc polling
/// cannot tell which cgroup a socket belongs to, and a node must not report its neighbours'.
/// </summary>
public sealed class FallbackCapture(
    SensorEventQueue queue,
    IServiceProvider services,
    KernelFeatures features,
    CgroupScope scope,
    IOptions<SensorOptions> options,
    ILogger<FallbackCapture> logger) : BackgroundService, ICaptureStatus
{
    /// <summary>How long eBPF capture gets to come up before a signal falls back.</summary>
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(3);

    private readonly Dictionary<(IPAddress, int, IPAddress, int, ulong), Connection> _connections = [];
    private readonly Dictionary<int, ProcessSnapshot> _processes = [];
    private volatile string? _tcpReason;
    private volatile string? _processReason;
    private bool _processesSeeded;
    private long _polls, _flows, _execs, _exits, _errors;

    private sealed record Connection(ulong FirstSeenNs, uint Pid, string Process, bool Inbound);

    private sealed record ProcessSnapshot(int Pid, int Ppid, uint Uid, string Comm, string Exe, string[] Args, ulong SeenNs);

    /// <inheritdoc />
    public IEnumerable<CapturePath> CapturePaths()
    {
        var interval = options.Value.FallbackPollInterval.TotalSeconds.ToString("0.#", CultureInfo.InvariantCulture);
        var (state, scoped) = scope.IsScoped
            ? ("unavailable", $"; no /proc fallback for a sensor scoped to {scope.Directory} (it cannot tell cgroups apart)")
            : ("degraded", "");
        if (_tcpReason is { } tcp)
        {
            yield return new CapturePath { Signal = "tcp", Program = "fallback", Path = $"/proc/net/tcp polling every {interval} s", State = state, Reason = tcp + scoped };
        }
        if (_processReason is { } process)
        {
            yield return new CapturePath { Signal = "process", Program = "fallback", Path = $"/proc polling every {interval} s", State = state, Reason = process + scoped };
        }
    }

    /// <inheritdoc />
    public void AddCounters(IDictionary<string, ulong> counters)
    {
        counters["fallback_polls"] = (ulong)Interlocked.Read(ref _polls);
        counters["fallback_flows"] = (ulong)Interlocked.Read(ref _flows);
        counters["fallback_execs"] = (ulong)Interlocked.Read(ref _execs);
        counters["fallback_exits"] = (ulong)Interlocked.Read(ref _exits);
        counters["fallback_errors"] = (ulong)Interlocked.Read(ref _errors);
    }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var started = DateTime.UtcNow;
        using var timer = new PeriodicTimer(options.Value.FallbackPollInterval);
        do
        {
            _tcpReason = NeedsFallback("tcp", started);
            _processReason = NeedsFallback("process", started);
            try
            {
                if (_tcpReason is not null && !scope.IsScoped)
                {
                    PollTcp();
                }
                if (_processReason is not null && !scope.IsScoped)
                {
                    PollProcesses();
                }
                Interlocked.Increment(ref _polls);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // A fallback that dies takes the signal with it: count, log, poll again.
                Interlocked.Increment(ref _errors);
                logger.LogWarning(ex, "Fallback poll failed");
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }

    /// <summary>Why <paramref name="signal"/> needs the fallback now, or null when eBPF covers it.</summary>
    private string? NeedsFallback(string signal, DateTime started)
    {
        if (!features.BpfUsable)
        {
            return "eBPF unavailable: " + features.BpfUnusableReason;
        }
        if (DateTime.UtcNow - started < Grace)
        {
            return null;
        }
        var paths = services.GetServices<ICaptureStatus>().Where(p => !ReferenceEquals(p, this))
            .SelectMany(p => p.CapturePaths()).Where(p => p.Signal == signal).ToList();
        if (paths.Count == 0 && signal == "process")
        {
            return "no eBPF process capture in this sensor";
        }
        return paths.Any(p => p.State == "active") ? null
            : "eBPF " + signal + " capture unavailable: " + string.Join("; ", paths.Select(p => p.Reason).Where(r => r.Length > 0));
    }

    private void PollTcp()
    {
        var now = NowNs();
        var sockets = ProcNetTcpReader.Parse(ReadOrEmpty("/proc/net/tcp")).Concat(ProcNetTcpReader.Parse(ReadOrEmpty("/proc/net/tcp6"))).ToList();
        var listening = sockets.Where(s => s.State == ProcNetTcpReader.Listen).Select(s => s.LocalPort).ToHashSet();
        var current = sockets.Where(s => s.State == ProcNetTcpReader.Established)
            .ToDictionary(s => (s.Local, s.LocalPort, s.Remote, s.RemotePort, s.Inode));
        var fresh = current.Keys.Where(k => !_connections.ContainsKey(k)).ToList();
        if (fresh.Count > 0)
        {
            var owners = SocketOwners(fresh.Select(k => k.Inode).ToHashSet());
            foreach (var key in fresh)
            {
                owners.TryGetValue(key.Inode, out var owner);
                _connections[key] = new Connection(now, (uint)owner.Pid, owner.Comm ?? "", listening.Contains(key.LocalPort));
            }
        }
        foreach (var key in _connections.Keys.Where(k => !current.ContainsKey(k)).ToList())
        {
            var c = _connections[key];
            _connections.Remove(key);
            var local = new Endpoint { Ip = Bytes(key.Item1), Port = (uint)key.Item2, Pid = c.Pid, Process = c.Process };
            var remote = new Endpoint { Ip = Bytes(key.Item3), Port = (uint)key.Item4 };
            var e = new Event
            {
                TimeUnixNano = now,
                Node = options.Value.Node,
                Type = EventType.Flow,
                Capture = "fallback",
                Source = c.Inbound ? remote : local,
                Destination = c.Inbound ? local : remote,
                Flow = new Flow
                {
                    Protocol = Protocol.Tcp,
                    State = "closed",
                    DurationNs = now - c.FirstSeenNs,
                    Direction = c.Inbound ? "ingress" : "egress",
                    Verdict = Verdict.Forwarded,
                },
            };
            if (queue.TryEnqueue(e))
            {
                Interlocked.Increment(ref _flows);
            }
        }
    }

    private void PollProcesses()
    {
        var now = NowNs();
        var seen = new HashSet<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                continue;
            }
            seen.Add(pid);
            if (_processes.ContainsKey(pid) || ReadProcess(pid, now) is not { } snapshot)
            {
                continue;
            }
            _processes[pid] = snapshot;
            if (_processesSeeded)
            {
                Emit(EventType.Exec, snapshot, now);
            }
        }
        foreach (var pid in _processes.Keys.Where(p => !seen.Contains(p)).ToList())
        {
            var snapshot = _processes[pid];
            _processes.Remove(pid);
            Emit(EventType.Exit, snapshot, now);
        }
        _processesSeeded = true;
    }

    private void Emit(EventType type, ProcessSnapshot p, ulong now)
    {
        var info = new ProcessInfo { Pid = (uint)p.Pid, Ppid = (uint)p.Ppid, Uid = p.Uid, Exe = p.Exe };
        info.Args.AddRange(p.Args);
        if (_processes.TryGetValue(p.Ppid, out var parent))
        {
            info.ParentExe = parent.Exe;
        }
        if (type == EventType.Exit)
        {
            info.LifetimeNs = now - p.SeenNs; // at least; the start was not observed exactly
        }
        var e = new Event
        {
            TimeUnixNano = now,
            Node = options.Value.Node,
            Type = type,
            Capture = "fallback",
            Source = new Endpoint { Pid = (uint)p.Pid, Process = p.Comm },
            Process = info,
        };
        if (queue.TryEnqueue(e))
        {
            Interlocked.Increment(ref type == EventType.Exec ? ref _execs : ref _exits);
        }
    }

    private static ProcessSnapshot? ReadProcess(int pid, ulong now)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var close = stat.LastIndexOf(')');
            var comm = stat[(stat.IndexOf('(') + 1)..close];
            var rest = stat[(close + 2)..].Split(' ');
            var ppid = int.Parse(rest[1], CultureInfo.InvariantCulture);
            var uid = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("Uid:", StringComparison.Ordinal))?
                .Split('\t', StringSplitOptions.RemoveEmptyEntries).ElementAtOrDefault(1);
            var args = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0', StringSplitOptions.RemoveEmptyEntries).Take(16).ToArray();
            string exe;
            try
            {
                exe = new FileInfo($"/proc/{pid}/exe").LinkTarget ?? "";
            }
            catch (IOException)
            {
                exe = "";
            }
            return new ProcessSnapshot(pid, ppid, uint.TryParse(uid, CultureInfo.InvariantCulture, out var u) ? u : 0, comm, exe, args, now);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return null; // exited while we looked
        }
    }

    /// <summary>Finds the processes owning the given socket inodes by walking /proc/*/fd.</summary>
    private static Dictionary<ulong, (int Pid, string? Comm)> SocketOwners(HashSet<ulong> inodes)
    {
        var owners = new Dictionary<ulong, (int, string?)>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                continue;
            }
            try
            {
                foreach (var fd in Directory.EnumerateFileSystemEntries($"{dir}/fd"))
                {
                    var target = new FileInfo(fd).LinkTarget;
                    if (target is not null && target.StartsWith("socket:[", StringComparison.Ordinal) &&
                        ulong.TryParse(target.AsSpan(8, target.Length - 9), NumberStyles.None, CultureInfo.InvariantCulture, out var inode) &&
                        inodes.Contains(inode) && !owners.ContainsKey(inode))
                    {
                        owners[inode] = (pid, File.ReadAllText($"{dir}/comm").Trim());
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // The process exited, or its fds are not ours to read.
            }
            if (owners.Count == inodes.Count)
            {
                break;
            }
        }
        return owners;
    }

    private static string ReadOrEmpty(string path) => File.Exists(path) ? File.ReadAllText(path) : "";

    private static ByteString Bytes(IPAddress address) => ByteString.CopyFrom(address.GetAddressBytes());

    private static ulong NowNs() => (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000;
}
