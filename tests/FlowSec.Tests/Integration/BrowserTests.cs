using System.Diagnostics;
using System.Text.Json;

namespace FlowSec.Tests.Integration;

/// <summary>
/// The live page in a real browser (Debian's chromium driven by playwright-core): a connection
/// made on the host appears as a row, pushed over SignalR by the real relay from the real sensor.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class BrowserTests(FlowSecStack stack)
{
    [Fact]
    public async Task Live_page_shows_a_new_connection_as_a_row()
    {
        await using var topology = await TestTopology.CreateAsync("server", "client");
        var server = topology.Pods["server"];
        var client = topology.Pods["client"];
        server.Start("/usr/bin/python3", "-m", "http.server", "8081", "--bind", server.Address.ToString());

        var info = new ProcessStartInfo("node",
        [
            Path.Combine(FlowSecStack.RepoRoot, "tests", "browser", "live-flows.mjs"), stack.UiUrl,
            "--process", "curl", "--dst-port", "8081", "--timeout-ms", "30000",
        ])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        using var browser = Process.Start(info)!;
        var stdout = browser.StandardOutput.ReadToEndAsync();
        var stderr = browser.StandardError.ReadToEndAsync();

        // The page only shows what happens after it connected, and we cannot see when that is
        // from here: keep making connections until the browser reports a row (bounded).
        var watch = Stopwatch.StartNew();
        while (!browser.HasExited && watch.Elapsed < TimeSpan.FromSeconds(40))
        {
            await client.RunAsync(TimeSpan.FromSeconds(5), "curl", "-s", "-o", "/dev/null", "--max-time", "2",
                $"http://{server.Address}:8081/");
            await Task.WhenAny(browser.WaitForExitAsync(), Task.Delay(300));
        }
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await browser.WaitForExitAsync(timeout.Token);

        browser.ExitCode.Should().Be(0, await stderr);
        var row = JsonDocument.Parse(await stdout).RootElement;
        row.GetProperty("data").GetProperty("src-process").GetString().Should().Be("curl");
        row.GetProperty("data").GetProperty("dst-port").GetString().Should().Be("8081");
        row.GetProperty("data").GetProperty("dst-ip").GetString().Should().Be(server.Address.ToString());
    }
}
