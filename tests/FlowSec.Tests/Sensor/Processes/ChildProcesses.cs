using System.Diagnostics;

namespace FlowSec.Tests.Sensor.Processes;

/// <summary>Child processes and kernel state the kernel tests need.</summary>
internal static class ChildProcesses
{
    /// <summary>Runs <paramref name="file"/> with <paramref name="args"/>, waits (bounded) for it to end; returns its pid and exit code.</summary>
    public static (int Pid, int ExitCode, TimeSpan Elapsed) Run(string file, params string[] args)
    {
        var watch = Stopwatch.StartNew();
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            start.ArgumentList.Add(a);
        }
        using var process = Process.Start(start)!;
        int pid = process.Id;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(20)))
        {
            process.Kill();
            throw new Xunit.Sdk.XunitException($"{file} did not end within 20 s");
        }
        Task.WaitAll(stdout, stderr);
        return (pid, process.ExitCode, watch.Elapsed);
    }

    /// <summary>This process's cgroup v2 id: the inode of its cgroup directory in the unified hierarchy.</summary>
    public static ulong OwnCgroupId()
    {
        string path = File.ReadAllLines("/proc/self/cgroup").Single(l => l.StartsWith("0::", StringComparison.Ordinal))[3..];
        string mount = File.ReadAllLines("/proc/self/mounts").Select(l => l.Split(' ')).First(f => f[2] == "cgroup2")[1];
        return ulong.Parse(KernelLayoutTests.Run("stat", $"-c %i {mount}{path}").Trim());
    }

    /// <summary>This process's executable, as the kernel names it.</summary>
    public static string OwnExe() => KernelLayoutTests.Run("readlink", $"-f /proc/{Environment.ProcessId}/exe").Trim();
}
