using System.Diagnostics;

namespace FlowSec.Tests.Integration;

/// <summary>Runs the built <c>flowsec</c> CLI against a relay, as a user would, and checks its exit code.</summary>
public static class CliRunner
{
    /// <summary>
    /// Runs <c>flowsec ARGS --relay RELAY --token-file FILE</c>. <paramref name="expectedExit"/> 0
    /// asserts success (stderr in the message), a positive value that exact code, a negative one any failure.
    /// </summary>
    public static async Task<(List<string> Stdout, string Stderr)> RunAsync(Uri relay, string tokenFile, int expectedExit, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "flowsec.dll"), .. args,
            "--relay", relay.ToString(), "--token-file", tokenFile])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await p.WaitForExitAsync(timeout.Token);
        if (expectedExit >= 0)
        {
            p.ExitCode.Should().Be(expectedExit, await stderr);
        }
        else
        {
            p.ExitCode.Should().NotBe(0);
        }
        return ((await stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList(), await stderr);
    }
}
