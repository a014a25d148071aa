using System.Diagnostics;
using FlowSec.Api.Auth;
using FlowSec.Tests.Integration;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Cli;

/// <summary>
/// `flowsec up --tls` as a user runs it: ClickHouse, relay and sensor come up behind mutual TLS,
/// `flowsec status` then finds the address and certificates by itself, and SIGTERM or SIGINT to `up`
/// alone stops every child before `up` exits.
/// </summary>
public sealed class UpCommandTests : IDisposable
{
    private readonly string _state = Directory.CreateTempSubdirectory("flowsec-up-").FullName;
    private readonly string _cgroup = Path.Combine(TestTopology.CgroupRoot, "flowsec-up-" + Guid.NewGuid().ToString("N")[..6]);

    public UpCommandTests()
    {
        // `up` runs the binaries from its state directory: these are the ones this test run built.
        var bin = Path.Combine(_state, "bin");
        Directory.CreateDirectory(bin);
        Directory.CreateSymbolicLink(Path.Combine(bin, "relay"), AppContext.BaseDirectory);
        Directory.CreateSymbolicLink(Path.Combine(bin, "sensor"), AppContext.BaseDirectory);
        Directory.CreateDirectory(_cgroup);
    }

    public void Dispose()
    {
        foreach (var pid in ChildrenOfThisState())
        {
            try
            {
                Process.GetProcessById(pid).Kill();
            }
            catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
            {
                // Already gone.
            }
        }
        Directory.Delete(_cgroup);
        Directory.Delete(_state, recursive: true);
    }

    [Theory]
    [InlineData("TERM")] // what a service manager sends
    [InlineData("INT")] // Ctrl-C, or kill -INT to `up` alone
    public async Task Up_with_tls_serves_the_cli_and_a_signal_to_up_alone_stops_every_child(string signal)
    {
        int grpc = FlowSecStack.FreePort();
        using var up = Cli(["up", "--tls", "--grpc", $"127.0.0.1:{grpc}", "--ui", $"127.0.0.1:{FlowSecStack.FreePort()}",
            "--clickhouse-http-port", FlowSecStack.FreePort().ToString(), "--clickhouse-tcp-port", FlowSecStack.FreePort().ToString(),
            "--cgroup", _cgroup, "--node", "up-test"]);
        var output = new System.Collections.Concurrent.ConcurrentQueue<string>();
        up.OutputDataReceived += (_, e) => output.Enqueue(e.Data ?? "");
        up.ErrorDataReceived += (_, e) => output.Enqueue(e.Data ?? "");
        up.Start();
        up.BeginOutputReadLine();
        up.BeginErrorReadLine();
        await Eventually.HoldsAsync(() => output.Any(l => l.StartsWith("FlowSec is up", StringComparison.Ordinal)) || up.HasExited,
            TimeSpan.FromSeconds(120), () => string.Join('\n', output));
        up.HasExited.Should().BeFalse($"up must be running:\n{string.Join('\n', output)}");

        TlsMaterial.Exists(Path.Combine(_state, "tls")).Should().BeTrue();
        File.ReadAllText(Path.Combine(_state, "relay-url")).Trim().Should().Be($"https://127.0.0.1:{grpc}");
        using (var status = Cli(["status"]))
        {
            status.Start();
            var text = await status.StandardOutput.ReadToEndAsync();
            await status.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
            status.ExitCode.Should().Be(0, $"status over mutual TLS with no flags:\n{text}\n{await status.StandardError.ReadToEndAsync()}");
            text.Should().Contain($"https://127.0.0.1:{grpc}").And.Contain("up-test");
        }

        var children = ChildrenOfThisState();
        children.Should().HaveCount(3, "ClickHouse, relay and sensor run");
        Process.Start("kill", [$"-{signal}", up.Id.ToString()])!.WaitForExit();
        await up.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        up.ExitCode.Should().Be(0, string.Join('\n', output));
        ChildrenOfThisState().Should().BeEmpty("up stops its children before it exits");
    }

    private Process Cli(string[] args)
    {
        var info = new ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "flowsec.dll"), .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        info.Environment["FLOWSEC_STATE"] = _state;
        info.Environment["FLOWSEC_HOME"] = FlowSecStack.RepoRoot;
        info.Environment.Remove("FLOWSEC_RELAY");
        return new Process { StartInfo = info };
    }

    // Processes started for this state directory (their command lines name it), other than `up`.
    private List<int> ChildrenOfThisState()
    {
        var found = new List<int>();
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid))
            {
                continue;
            }
            try
            {
                var cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
                if (cmdline.Contains(_state, StringComparison.Ordinal) && !cmdline.Contains("flowsec.dll up", StringComparison.Ordinal))
                {
                    found.Add(pid);
                }
            }
            catch (IOException)
            {
            }
        }
        return found;
    }
}
