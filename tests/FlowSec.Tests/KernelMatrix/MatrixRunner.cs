using System.Diagnostics;
using System.Reflection;
using System.Text;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.KernelMatrix;

/// <summary>A kernel the matrix runs on: the host itself, or a Debian kernel booted under qemu.</summary>
internal sealed record MatrixKernel(string Name, string Release, string? Directory)
{
    public bool IsHost => Directory is null;

    public string Vmlinuz => Path.Combine(Directory!, "vmlinuz");

    public string Modules => Path.Combine(Directory!, "modules");
}

/// <summary>What one kernel's run produced.</summary>
internal sealed record KernelRun(MatrixKernel Kernel, TimeSpan Duration, LoaderOutput? Output, string? Error, string RawOutput, string Console);

/// <summary>
/// Drives the matrix: extracts the sensor's embedded BPF objects, builds the static loader and the
/// probe object, fetches and caches the Debian kernels, and runs the loader on the host and in a
/// qemu guest per kernel (tests/kernel-matrix/*.sh do the shell-level work; they run by hand too).
/// </summary>
internal sealed class MatrixRunner
{
    /// <summary>Series booted under qemu (Debian cloud kernels), besides the host.</summary>
    public static readonly string[] GuestSeries = ["6.1", "6.12"];

    /// <summary>The file object's task-work programs call this kfunc (Linux 6.18+).</summary>
    public const string TaskWorkKfunc = "bpf_task_work_schedule_resume_impl";

    public static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(150);
    public static readonly TimeSpan HostTimeout = TimeSpan.FromSeconds(90);

    public MatrixRunner(string workDir)
    {
        RepoRoot = typeof(MatrixRunner).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .First(a => a.Key == "RepoRoot").Value!.TrimEnd('/');
        WorkDir = workDir;
        ObjectDir = Path.Combine(workDir, "obj");
        ToolDir = Path.Combine(workDir, "tools");
        ScriptDir = Path.Combine(RepoRoot, "tests", "kernel-matrix");
        KernelCache = Path.Combine(RepoRoot, ".cache", "kernels");
    }

    public string RepoRoot { get; }

    public string WorkDir { get; }

    public string ObjectDir { get; }

    public string ToolDir { get; }

    public string ScriptDir { get; }

    public string KernelCache { get; }

    public string Loader => Path.Combine(ToolDir, "kmatrix-loader");

    /// <summary>
    /// Writes every embedded resource "bpf/&lt;name&gt;.bpf.o" of the sensor assembly to ObjectDir,
    /// plus the probe object; returns the sensor's object file names.
    /// </summary>
    public IReadOnlyList<string> ExtractObjects()
    {
        Directory.CreateDirectory(ObjectDir);
        var assembly = typeof(TcpRecordDecoder).Assembly;
        var names = new List<string>();
        foreach (string resource in assembly.GetManifestResourceNames().Where(n => n.StartsWith("bpf/", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            string file = resource["bpf/".Length..];
            using var stream = assembly.GetManifestResourceStream(resource)!;
            using var target = File.Create(Path.Combine(ObjectDir, file));
            stream.CopyTo(target);
            names.Add(file);
        }
        File.Copy(Path.Combine(ToolDir, "probes.bpf.o"), Path.Combine(ObjectDir, "probes.bpf.o"), overwrite: true);
        return names;
    }

    /// <summary>
    /// The loader's units for the sensor's objects: one per object with all its programs, except
    /// the file object, whose two program sets are alternatives (the sensor loads one): the
    /// task-work set where the kernel has the kfunc, the entry/exit tracepoint pair elsewhere; and
    /// the DNS object, whose two egress programs are alternatives: the "dns" unit loads the one the
    /// sensor's <see cref="DnsEgressPrograms.Choose"/> would pick (from the same helper probe), the
    /// "dns-taskread" unit forces the task-read program on every kernel. Then the capture-path
    /// probes, each program alone and timed.
    /// </summary>
    public static IReadOnlyList<string> Units(IEnumerable<string> objects)
    {
        var units = new List<string>();
        foreach (string o in objects)
        {
            string name = o.EndsWith(".bpf.o", StringComparison.Ordinal) ? o[..^".bpf.o".Length] : o;
            if (name == "file")
            {
                units.Add($"file-taskwork={o}:+tw_:need={TaskWorkKfunc}");
                units.Add($"file-exitpair={o}:-tw_");
            }
            else if (name == "dns")
            {
                units.Add($"dns={o}:{DnsChooseOption}");
                units.Add($"dns-taskread={o}:!{DnsEgressPrograms.HelpersProgram}");
            }
            else
            {
                units.Add($"{name}={o}");
            }
        }
        units.Add("probes=probes.bpf.o:each:cost");
        return units;
    }

    /// <summary>The loader's <c>choose=</c> option built from the sensor's own chooser constants, so the two cannot disagree.</summary>
    public static string DnsChooseOption =>
        $"choose={DnsEgressPrograms.HelpersProgram},{DnsEgressPrograms.TaskReadProgram},{string.Join(',', DnsEgressPrograms.RequiredHelpers.Select(h => h.Name))}";

    /// <summary>The loader's arguments: options from the sensor's own constants, then the units.</summary>
    public static IReadOnlyList<string> LoaderArguments(IReadOnlyList<string> units) =>
        ["--watch-value", ((uint)FileWatch.Report).ToString(System.Globalization.CultureInfo.InvariantCulture), .. units];

    /// <summary>Fails with what to install when a tool the matrix needs is missing.</summary>
    public static void RequireTools()
    {
        string[] path = (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':');
        foreach (var (tool, package) in new[] { ("qemu-system-x86_64", "qemu-system-x86"), ("gcc", "gcc"), ("clang-14", "clang-14"), ("cpio", "cpio"), ("busybox", "busybox-static") })
        {
            if (!path.Any(d => File.Exists(Path.Combine(d, tool))))
            {
                throw new InvalidOperationException($"the kernel matrix needs {tool}: apt-get install {package}");
            }
        }
    }

    public async Task BuildToolsAsync()
    {
        var r = await RunAsync(Path.Combine(ScriptDir, "build.sh"), [ToolDir], ScriptDir, TimeSpan.FromSeconds(120));
        if (r.ExitCode != 0)
        {
            throw new InvalidOperationException($"building the loader failed (tests/kernel-matrix/build.sh, exit {r.ExitCode}):\n{r.Stderr}{r.Stdout}");
        }
    }

    /// <summary>Fetches (or finds in the cache) the guest kernels; throws with the script's reason when it cannot.</summary>
    public async Task<IReadOnlyList<MatrixKernel>> FetchKernelsAsync()
    {
        var r = await RunAsync(Path.Combine(ScriptDir, "fetch-kernels.sh"), [KernelCache, .. GuestSeries], ScriptDir, TimeSpan.FromSeconds(300));
        if (r.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"the kernel matrix needs Debian's cloud kernels {string.Join(", ", GuestSeries)} (apt-get download, cached in {KernelCache}); " +
                $"fetch-kernels.sh failed with exit {r.ExitCode}: {r.Stderr.Trim()}");
        }
        var kernels = new List<MatrixKernel>();
        foreach (string line in r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] f = line.Split(' ');
            if (f.Length == 4 && f[0] == "KERNEL")
            {
                kernels.Add(new MatrixKernel(f[1], f[2], f[3]));
            }
        }
        if (kernels.Count != GuestSeries.Length)
        {
            throw new InvalidOperationException($"fetch-kernels.sh named {kernels.Count} kernels, expected {GuestSeries.Length}:\n{r.Stdout}");
        }
        return kernels;
    }

    /// <summary>The loader, natively on the running kernel.</summary>
    public async Task<KernelRun> RunHostAsync(IReadOnlyList<string> units)
    {
        var kernel = new MatrixKernel("host", Environment.OSVersion.Version.ToString(), null);
        var sw = Stopwatch.StartNew();
        var r = await RunAsync(Loader, LoaderArguments(units), ObjectDir, HostTimeout);
        sw.Stop();
        File.WriteAllText(Path.Combine(WorkDir, "host-loader.log"), r.Stdout + r.Stderr);
        var output = LoaderOutput.Parse(r.Stdout);
        string? error = r.TimedOut ? $"loader timed out after {HostTimeout.TotalSeconds:0} s"
            : r.ExitCode != 0 ? $"loader exited {r.ExitCode}: {Tail(r.Stderr, 10)}"
            : !output.Done ? "loader output has no DONE line"
            : null;
        return new KernelRun(kernel with { Release = output.Fact("release") }, sw.Elapsed, output, error, r.Stdout, r.Stderr);
    }

    /// <summary>Builds this kernel's initramfs and boots it under qemu with the loader as its work.</summary>
    public async Task<KernelRun> RunGuestAsync(MatrixKernel kernel, IReadOnlyList<string> units)
    {
        string dir = Path.Combine(WorkDir, "guest-" + kernel.Name);
        Directory.CreateDirectory(dir);
        string initrd = Path.Combine(dir, "initramfs.cpio");
        var sw = Stopwatch.StartNew();
        var mk = await RunAsync(Path.Combine(ScriptDir, "make-initramfs.sh"), [initrd, Loader, ObjectDir, kernel.Modules, .. LoaderArguments(units)], ScriptDir, TimeSpan.FromSeconds(60));
        if (mk.ExitCode != 0)
        {
            return new KernelRun(kernel, sw.Elapsed, null, $"make-initramfs.sh failed ({mk.ExitCode}): {mk.Stderr}", "", "");
        }
        var boot = await RunAsync(Path.Combine(ScriptDir, "boot.sh"),
            [kernel.Vmlinuz, initrd, dir, ((int)GuestTimeout.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture)],
            ScriptDir, GuestTimeout + TimeSpan.FromSeconds(15));
        sw.Stop();
        string raw = ReadIfExists(Path.Combine(dir, "loader.log"));
        string console = ReadIfExists(Path.Combine(dir, "console.log"));
        var output = LoaderOutput.Parse(raw);
        string? error = boot.ExitCode == 124 || boot.TimedOut ? $"qemu timed out after {GuestTimeout.TotalSeconds:0} s (serial output in {dir})"
            : boot.ExitCode != 0 ? $"qemu exited {boot.ExitCode}: {Tail(boot.Stderr, 10)}"
            : !output.Done ? $"the guest's loader output has no DONE line (kernel console: {Tail(console, 15)})"
            : output.ExitCode != 0 ? $"the guest's loader exited {output.ExitCode}"
            : null;
        return new KernelRun(kernel, sw.Elapsed, output, error, raw, console);
    }

    private static string ReadIfExists(string path) => File.Exists(path) ? File.ReadAllText(path, Encoding.UTF8) : "";

    private static string Tail(string text, int lines) =>
        string.Join('\n', text.Split('\n').TakeLast(lines));

    internal sealed record ProcessResult(int ExitCode, string Stdout, string Stderr, bool TimedOut);

    internal static async Task<ProcessResult> RunAsync(string file, IEnumerable<string> args, string workingDirectory, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        bool timedOut = false;
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            timedOut = true;
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }
        return new ProcessResult(process.ExitCode, await stdout, await stderr, timedOut);
    }
}
