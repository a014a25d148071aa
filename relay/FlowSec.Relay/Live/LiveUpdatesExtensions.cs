using FlowSec.Relay.Pipeline;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.StaticFiles;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Logging;

namespace FlowSec.Relay.Live;

/// <summary>Registers and maps the live view: the SignalR hub, the broadcaster and the static UI.</summary>
public static class LiveUpdatesExtensions
{
    /// <summary>Path of the hub.</summary>
    public const string HubPath = "/hub/live";

    /// <summary>Path the SignalR browser client is served at.</summary>
    public const string SignalRClientPath = "/lib/signalr.min.js";

    /// <summary>Registers SignalR, <see cref="LiveBroadcaster"/> (hosted) and it as an <see cref="ILiveEventSink"/>.</summary>
    public static IServiceCollection AddLiveUpdates(this IServiceCollection services)
    {
        services.AddSignalR();
        services.AddSingleton<LiveBroadcaster>();
        services.AddSingleton<ILiveEventSink>(sp => sp.GetRequiredService<LiveBroadcaster>());
        services.AddHostedService(sp => sp.GetRequiredService<LiveBroadcaster>());
        return services;
    }

    /// <summary>
    /// Maps the hub at <see cref="HubPath"/>, serves the UI's pages from <paramref name="uiDirectory"/>
    /// (index.html at <c>/</c>) and the SignalR browser client from its npm package at
    /// <see cref="SignalRClientPath"/>. Only page assets are served: nothing under node_modules and
    /// no package files.
    /// </summary>
    public static WebApplication MapLiveUpdates(this WebApplication app, string uiDirectory)
    {
        var root = Path.GetFullPath(uiDirectory);
        var files = new PhysicalFileProvider(root);
        var types = new FileExtensionContentTypeProvider();
        foreach (var ext in types.Mappings.Keys.Except([".html", ".js", ".mjs", ".css", ".svg", ".png", ".ico", ".woff2"]).ToList())
        {
            types.Mappings.Remove(ext);
        }

        app.UseWhen(
            ctx => !ctx.Request.Path.StartsWithSegments("/node_modules", StringComparison.OrdinalIgnoreCase),
            branch =>
            {
                branch.UseDefaultFiles(new DefaultFilesOptions { FileProvider = files, DefaultFileNames = ["index.html"] });
                branch.UseStaticFiles(new StaticFileOptions { FileProvider = files, ContentTypeProvider = types });
            });

        var client = Path.Combine(root, "node_modules", "@microsoft", "signalr", "dist", "browser", "signalr.min.js");
        if (!File.Exists(client))
        {
            app.Logger.LogWarning("SignalR browser client missing at {Path}: run `npm ci` in {Ui}; the live page cannot connect without it", client, root);
        }

        app.MapGet(SignalRClientPath, () => File.Exists(client)
            ? Results.File(client, "text/javascript")
            : Results.Problem($"SignalR browser client not installed: run `npm ci` in {root}", statusCode: StatusCodes.Status503ServiceUnavailable));
        app.MapHub<LiveHub>(HubPath);
        return app;
    }
}
