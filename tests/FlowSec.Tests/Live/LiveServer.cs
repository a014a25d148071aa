using System.Net;
using System.Runtime.CompilerServices;
using FlowSec.Relay.Live;
using FlowSec.Relay.Pipeline;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FlowSec.Tests.Live;

/// <summary>The relay's live pieces alone in a WebApplication: Kestrel on a free loopback port, real HTTP.</summary>
public sealed class LiveServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private LiveServer(WebApplication app)
    {
        _app = app;
        Url = app.Urls.Single().TrimEnd('/') + "/";
    }

    /// <summary>Base URL, e.g. http://127.0.0.1:40123/.</summary>
    public string Url { get; }

    /// <summary>The broadcaster the relay's pipeline would publish to.</summary>
    public LiveBroadcaster Broadcaster => _app.Services.GetRequiredService<LiveBroadcaster>();

    /// <summary>The sink as the pipeline sees it.</summary>
    public ILiveEventSink Sink => _app.Services.GetRequiredService<ILiveEventSink>();

    /// <summary>The repository's ui/ directory.</summary>
    public static string UiDirectory => Path.Combine(RepoRoot(), "ui");

    /// <summary>Starts the server, serving <see cref="UiDirectory"/>.</summary>
    public static async Task<LiveServer> StartAsync()
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        builder.Logging.ClearProviders();
        builder.Services.AddLiveUpdates();
        var app = builder.Build();
        app.MapLiveUpdates(UiDirectory);
        await app.StartAsync();
        return new LiveServer(app);
    }

    /// <summary>Fails with a clear message when <c>npm ci</c> has not been run in ui/.</summary>
    public static void RequireNodeModules()
    {
        foreach (var package in new[] { "@microsoft/signalr", "playwright-core" })
        {
            Directory.Exists(Path.Combine(UiDirectory, "node_modules", package)).Should()
                .BeTrue($"the browser tests need ui/node_modules/{package}: run `npm ci` in {UiDirectory}");
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    private static string RepoRoot([CallerFilePath] string source = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(source)!, "..", "..", ".."));
}
