using System.Diagnostics;
using System.Net.Sockets;
using FlowSec.Api.Auth;
using FlowSec.Tests.Integration;

namespace FlowSec.Tests.Relay;

/// <summary>
/// The relay is often started from a directory that is anything but quiet: <c>flowsec up</c> runs it
/// from the user's directory, which holds <c>.flowsec/clickhouse</c>, where the server creates and
/// renames part directories many times a second under ingest. The host watches its content root
/// (recursively, for appsettings changes), so the relay must not take its working directory as
/// content root, or it spends CPU on every one of those file events.
/// </summary>
public sealed class RelayContentRootTests : IDisposable
{
    private const int Subdirectories = 300;

    private readonly string _dir = Directory.CreateTempSubdirectory("flowsec-content-root-").FullName;

    [Fact]
    public async Task A_relay_started_from_a_busy_directory_does_not_watch_it()
    {
        var busy = Path.Combine(_dir, "busy");
        for (var i = 0; i < Subdirectories; i++)
        {
            Directory.CreateDirectory(Path.Combine(busy, "part_" + i));
        }

        var tokenFile = Path.Combine(_dir, "token");
        TokenFile.ReadOrCreate(tokenFile);
        var grpcPort = FlowSecStack.FreePort();
        var info = new ProcessStartInfo("dotnet") { UseShellExecute = false, WorkingDirectory = busy, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in (string[])
                 [
                     Path.Combine(AppContext.BaseDirectory, "FlowSec.Relay.dll"),
                     $"--Relay:GrpcListen=127.0.0.1:{grpcPort}", $"--Relay:UiListen=127.0.0.1:{FlowSecStack.FreePort()}",
                     $"--Relay:TokenFile={tokenFile}", $"--Relay:UiDirectory={_dir}",
                     // Nothing listens there: the relay starts and keeps retrying storage, which this test does not need.
                     $"--ClickHouse:Url=http://127.0.0.1:{FlowSecStack.FreePort()}",
                 ])
        {
            info.ArgumentList.Add(arg);
        }

        using var relay = Process.Start(info)!;
        var output = relay.StandardOutput.ReadToEndAsync();
        var errors = relay.StandardError.ReadToEndAsync();
        try
        {
            // The host builds its configuration (and its file watchers) before Kestrel listens.
            await WaitForListenerAsync(relay, grpcPort, TimeSpan.FromSeconds(60));

            var watches = InotifyWatches(relay.Id);
            Assert.True(watches < Subdirectories,
                $"the relay holds {watches} inotify watches: it watches the {Subdirectories} directories under its working directory");
        }
        finally
        {
            relay.Kill();
            await relay.WaitForExitAsync();
            await Task.WhenAll(output, errors);
        }
    }

    private static async Task WaitForListenerAsync(Process relay, int port, TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            Assert.False(relay.HasExited, "the relay exited");
            try
            {
                using var client = new TcpClient();
                await client.ConnectAsync("127.0.0.1", port);
                return;
            }
            catch (SocketException) when (watch.Elapsed < timeout)
            {
                await Task.Delay(100);
            }
        }
    }

    /// <summary>The inotify watches the process holds, over all its inotify descriptors (one <c>inotify wd:</c> line each in fdinfo).</summary>
    private static int InotifyWatches(int pid)
    {
        var watches = 0;
        foreach (var fd in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
        {
            if (new FileInfo(fd).LinkTarget == "anon_inode:inotify")
            {
                watches += File.ReadLines($"/proc/{pid}/fdinfo/{Path.GetFileName(fd)}").Count(l => l.StartsWith("inotify wd:", StringComparison.Ordinal));
            }
        }

        return watches;
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
