using System.Diagnostics;
using System.Net;
using System.Text.Json;
using FlowSec.Api.V1;
using FlowSec.Tests.Storage;
using Google.Protobuf;

namespace FlowSec.Tests.Live;

/// <summary>
/// The live-flows page in real headless Chromium (tests/browser/live-flows.mjs via node): an event
/// pushed through the broadcaster shows up as a row; a flow that was not sent does not.
/// </summary>
public sealed class LivePageTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_pushed_flow_appears_as_a_row_in_the_browser()
    {
        LiveServer.RequireNodeModules();
        await using var live = await LiveServer.StartAsync();
        using var browser = BrowserScript.Start(live.Url, "--process", "curl", "--dst-port", "8080", "--timeout-ms", "30000");
        await Eventually.HoldsAsync(() => live.Broadcaster.ConnectedClients == 1 || browser.HasExited, Timeout, () => "the page did not connect to the hub");
        if (browser.HasExited)
        {
            await browser.WaitAsync(Timeout);
            Assert.Fail("the browser script ended before the page connected: " + browser.Output);
        }

        live.Sink.Publish([Flow("nginx", 80), Flow("curl", 8080), Flow("curl", 9090)]);

        (await browser.WaitAsync(Timeout)).Should().Be(0, browser.Output);
        using var row = JsonDocument.Parse(browser.StdOut);
        var data = row.RootElement.GetProperty("data");
        data.GetProperty("src-process").GetString().Should().Be("curl");
        data.GetProperty("src-pid").GetString().Should().Be("4242");
        data.GetProperty("src-ip").GetString().Should().Be("10.1.0.7");
        data.GetProperty("dst-ip").GetString().Should().Be("10.1.0.9");
        data.GetProperty("dst-port").GetString().Should().Be("8080");
        data.GetProperty("protocol").GetString().Should().Be("tcp");
        row.RootElement.GetProperty("cells").EnumerateArray().Select(c => c.GetString()).Should()
            .Contain(["node-a", "frontend · curl[4242]", "10.1.0.7:41000", "10.1.0.9:8080", "TCP", "closed"]);
    }

    [Fact]
    public async Task A_flow_that_was_not_sent_is_not_found()
    {
        LiveServer.RequireNodeModules();
        await using var live = await LiveServer.StartAsync();
        using var browser = BrowserScript.Start(live.Url, "--process", "curl", "--dst-port", "8080", "--timeout-ms", "3000");
        await Eventually.HoldsAsync(() => live.Broadcaster.ConnectedClients == 1 || browser.HasExited, Timeout, () => "the page did not connect to the hub");

        live.Sink.Publish([Flow("curl", 9090)]);

        (await browser.WaitAsync(Timeout)).Should().Be(1, browser.Output);
        browser.StdErr.Should().Contain("no row matching").And.Contain("1 rows", "the row that was sent is on the page but does not match");
    }

    [Fact]
    public async Task The_ui_and_the_signalr_client_are_served_but_packages_are_not()
    {
        LiveServer.RequireNodeModules();
        await using var live = await LiveServer.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(live.Url) };

        (await http.GetStringAsync("/")).Should().Contain("FlowSec — live flows");
        (await http.GetAsync("/app.js")).Content.Headers.ContentType!.MediaType.Should().Be("text/javascript");
        (await http.GetAsync("/lib/signalr.min.js")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await http.GetAsync("/package.json")).StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await http.GetAsync("/node_modules/@microsoft/signalr/dist/browser/signalr.js")).StatusCode.Should().Be(HttpStatusCode.NotFound);
    }

    private static Event Flow(string process, uint dstPort) => new()
    {
        TimeUnixNano = (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000,
        Node = "node-a",
        Type = EventType.Flow,
        Capture = "bpf",
        Source = new Endpoint
        {
            Ip = ByteString.CopyFrom(IPAddress.Parse("10.1.0.7").GetAddressBytes()),
            Port = 41000,
            Pid = 4242,
            Process = process,
            Workload = "frontend",
        },
        Destination = new Endpoint { Ip = ByteString.CopyFrom(IPAddress.Parse("10.1.0.9").GetAddressBytes()), Port = dstPort, Workload = "api" },
        Flow = new Flow { Protocol = Protocol.Tcp, State = "closed", DurationNs = 1_500_000, BytesSent = 512, BytesReceived = 2048 },
    };
}

/// <summary>tests/browser/live-flows.mjs running under node, its output collected.</summary>
internal sealed class BrowserScript : IDisposable
{
    private readonly Process _process;
    private readonly Task<string> _stdout;
    private readonly Task<string> _stderr;

    private BrowserScript(Process process)
    {
        _process = process;
        _stdout = process.StandardOutput.ReadToEndAsync();
        _stderr = process.StandardError.ReadToEndAsync();
    }

    public bool HasExited => _process.HasExited;

    public string StdOut => _stdout.IsCompleted ? _stdout.Result : "";

    public string StdErr => _stderr.IsCompleted ? _stderr.Result : "";

    public string Output => $"stdout: {StdOut}\nstderr: {StdErr}";

    public static BrowserScript Start(string url, params string[] match)
    {
        var script = Path.Combine(LiveServer.UiDirectory, "..", "tests", "browser", "live-flows.mjs");
        var info = new ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { script, url }.Concat(match))
        {
            info.ArgumentList.Add(arg);
        }

        return new BrowserScript(Process.Start(info)!);
    }

    public async Task<int> WaitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        await Task.WhenAll(_stdout, _stderr);
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        _process.Dispose();
    }
}
