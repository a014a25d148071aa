using System.Diagnostics;
using System.Net;

namespace FlowSec.Tests.Integration;

/// <summary>
/// Test "pods": network namespaces joined by veth pairs to a bridge that lives in a namespace of
/// its own (nothing is configured in the host's namespace), each pod with its own cgroup v2
/// directory. Everything is torn down on dispose, also when the test failed.
/// </summary>
public sealed class TestTopology : IAsyncDisposable
{
    /// <summary>The cgroup v2 mount on these hosts (hybrid hierarchy).</summary>
    public const string CgroupRoot = "/sys/fs/cgroup/unified";

    private readonly List<Process> _processes = [];
    private readonly string _id;
    private readonly string _bridgeNs;
    private readonly string _cgroupDir;

    private TestTopology(string id)
    {
        _id = id;
        _bridgeNs = $"fs{id}br";
        _cgroupDir = Path.Combine(CgroupRoot, $"flowsec-test-{id}");
    }

    /// <summary>
    /// Every pod cgroup any topology of this test run created (id → pod name): tests running at the
    /// same time may each have a pod called "client", and the host-wide sensor rightly names both so.
    /// </summary>
    public static System.Collections.Concurrent.ConcurrentDictionary<ulong, string> PodCgroups { get; } = new();

    /// <summary>The pods by name.</summary>
    public Dictionary<string, TestPod> Pods { get; } = [];

    /// <summary>Creates one pod per name on a fresh /24.</summary>
    public static async Task<TestTopology> CreateAsync(params string[] podNames)
    {
        var id = Random.Shared.Next(0x1000, 0xffff).ToString("x", System.Globalization.CultureInfo.InvariantCulture);
        var topology = new TestTopology(id);
        try
        {
            var subnet = $"10.{Random.Shared.Next(200, 250)}.{Random.Shared.Next(1, 250)}";
            await Sh($"ip netns add {topology._bridgeNs}");
            await Sh($"ip -n {topology._bridgeNs} link add br0 type bridge && ip -n {topology._bridgeNs} link set br0 up");
            Directory.CreateDirectory(topology._cgroupDir);
            for (var i = 0; i < podNames.Length; i++)
            {
                var name = podNames[i];
                var ns = $"fs{id}{name}";
                var address = IPAddress.Parse($"{subnet}.{i + 1}");
                var hostSide = $"v{id}{i}";
                await Sh($"ip netns add {ns}");
                await Sh($"ip link add {hostSide} type veth peer name eth0 netns {ns}");
                await Sh($"ip link set {hostSide} netns {topology._bridgeNs}");
                await Sh($"ip -n {topology._bridgeNs} link set {hostSide} master br0 up");
                await Sh($"ip -n {ns} addr add {address}/24 dev eth0 && ip -n {ns} link set eth0 up && ip -n {ns} link set lo up");
                var cgroup = Path.Combine(topology._cgroupDir, name);
                Directory.CreateDirectory(cgroup);
                PodCgroups[FlowSec.Sensor.Attribution.CgroupResolver.Inode(cgroup)] = name;
                topology.Pods[name] = new TestPod(topology, name, ns, address, cgroup);
            }
            return topology;
        }
        catch
        {
            await topology.DisposeAsync();
            throw;
        }
    }

    internal Process Start(TestPod pod, string[] command, bool redirect)
    {
        var info = new ProcessStartInfo("sh")
        {
            RedirectStandardOutput = redirect,
            RedirectStandardError = redirect,
            UseShellExecute = false,
        };
        // Join the pod's cgroup first: `ip netns exec` remounts /sys, hiding the cgroup tree.
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add($"echo $$ > '{pod.CgroupPath}/cgroup.procs' && exec ip netns exec {pod.Namespace} \"$@\"");
        info.ArgumentList.Add("sh");
        foreach (var arg in command)
        {
            info.ArgumentList.Add(arg);
        }
        var process = Process.Start(info)!;
        lock (_processes)
        {
            _processes.Add(process);
        }
        return process;
    }

    /// <summary>
    /// Points a pod's resolver at <paramref name="nameserver"/>: `ip netns exec` bind-mounts
    /// /etc/netns/NAME/resolv.conf over /etc/resolv.conf, so curl and dig resolve through it.
    /// </summary>
    public void SetResolver(TestPod pod, IPAddress nameserver)
    {
        var dir = $"/etc/netns/{pod.Namespace}";
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "resolv.conf"), $"nameserver {nameserver}\n");
        _resolverDirs.Add(dir);
    }

    private readonly List<string> _resolverDirs = [];

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        foreach (var dir in _resolverDirs)
        {
            Directory.Delete(dir, recursive: true);
        }
        lock (_processes)
        {
            foreach (var p in _processes)
            {
                try
                {
                    if (!p.HasExited)
                    {
                        p.Kill(entireProcessTree: true);
                    }
                }
                catch (InvalidOperationException)
                {
                }
            }
        }
        foreach (var pod in Pods.Values)
        {
            await TrySh($"for p in $(ip netns pids {pod.Namespace}); do kill -9 $p; done; ip netns del {pod.Namespace}");
        }
        await TrySh($"ip netns del {_bridgeNs}");
        foreach (var pod in Pods.Values)
        {
            await TryRemoveCgroup(pod.CgroupPath);
        }
        await TryRemoveCgroup(_cgroupDir);
    }

    private static async Task TryRemoveCgroup(string path)
    {
        // A cgroup can be removed once its last process has exited; that takes a moment after kill.
        for (var attempt = 0; attempt < 50 && Directory.Exists(path); attempt++)
        {
            try
            {
                Directory.Delete(path);
            }
            catch (IOException)
            {
                await Task.Delay(100);
            }
        }
    }

    /// <summary>Runs a shell command on the host, throwing with its output when it fails.</summary>
    public static async Task<string> Sh(string command)
    {
        var (code, output) = await TryShCore(command);
        return code == 0 ? output : throw new InvalidOperationException($"`{command}` failed ({code}): {output}");
    }

    private static async Task TrySh(string command) => await TryShCore(command);

    private static async Task<(int, string)> TryShCore(string command)
    {
        var info = new ProcessStartInfo("sh", ["-c", command])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, (await stdout) + (await stderr));
    }
}

/// <summary>One test pod: a network namespace with one address and a cgroup directory.</summary>
public sealed class TestPod(TestTopology topology, string name, string ns, IPAddress address, string cgroupPath)
{
    /// <summary>Pod name; also the cgroup directory's name.</summary>
    public string Name { get; } = name;

    /// <summary>The network namespace.</summary>
    public string Namespace { get; } = ns;

    /// <summary>The pod's address on the test bridge.</summary>
    public IPAddress Address { get; } = address;

    /// <summary>The pod's cgroup v2 directory.</summary>
    public string CgroupPath { get; } = cgroupPath;

    /// <summary>The cgroup id the kernel reports for processes in this pod (the directory's inode).</summary>
    public ulong CgroupId => _cgroupId.Value;

    // Read once: each read runs `stat`, whose exec the sensor captures (a check over thousands of
    // endpoints would otherwise feed itself events).
    private readonly Lazy<ulong> _cgroupId = new(() => ulong.Parse(
        TestTopology.Sh($"stat -c %i '{cgroupPath}'").GetAwaiter().GetResult().Trim(), System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>Starts a long-running process in the pod; it is killed when the topology is disposed.</summary>
    public Process Start(params string[] command) => topology.Start(this, command, redirect: false);

    /// <summary>Starts a Python HTTP server on port <paramref name="port"/> of the pod's address and waits until it listens.</summary>
    public async Task StartHttpServerAsync(int port = 80)
    {
        Start("/usr/bin/python3", "-m", "http.server", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", Address.ToString());
        var watch = Stopwatch.StartNew();
        while (!(await RunAsync(TimeSpan.FromSeconds(10), "ss", "-Htln", $"sport = :{port}")).Output.Contains($":{port}", StringComparison.Ordinal))
        {
            if (watch.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new TimeoutException($"http server in pod {Name} not listening on :{port} within 30 s");
            }
            await Task.Delay(100);
        }
    }

    /// <summary>Runs a command in the pod to completion and returns its exit code and output.</summary>
    public async Task<(int ExitCode, string Output, int Pid)> RunAsync(TimeSpan timeout, params string[] command)
    {
        using var process = topology.Start(this, command, redirect: true);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        await process.WaitForExitAsync(cts.Token);
        return (process.ExitCode, (await stdout) + (await stderr), process.Id);
    }
}
