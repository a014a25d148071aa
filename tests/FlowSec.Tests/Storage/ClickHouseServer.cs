using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using FlowSec.Cli.Up;
using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>
/// A real clickhouse-server (via <see cref="ManagedClickHouse"/>) on free loopback ports in a temp
/// directory, shared by the tests of one class. Each test uses its own database.
/// </summary>
public sealed class ClickHouseServer : IAsyncLifetime
{
    private ManagedClickHouse? _server;

    /// <summary>The temp directory holding the server's data.</summary>
    public string DataDir { get; } = Directory.CreateTempSubdirectory("flowsec-ch-test-").FullName;

    /// <summary>The running server.</summary>
    public ManagedClickHouse Server => _server ?? throw new InvalidOperationException("not started");

    /// <summary>A client for the server.</summary>
    public ClickHouseHttpClient Client { get; private set; } = null!;

    /// <inheritdoc />
    public async Task InitializeAsync()
    {
        _server = await ManagedClickHouse.StartAsync(DataDir, FreePort(), FreePort(), CancellationToken.None);
        Client = new ClickHouseHttpClient(Options("default"));
    }

    /// <inheritdoc />
    public async Task DisposeAsync()
    {
        Client?.Dispose();
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }

        Directory.Delete(DataDir, recursive: true);
    }

    /// <summary>Options for this server and a database of its own.</summary>
    public ClickHouseOptions Options(string database) => new() { Url = Server.Url, Database = database };

    /// <summary>A fresh database name, so tests sharing the server never see each other's rows.</summary>
    public static string NewDatabase() => "t_" + Guid.NewGuid().ToString("N")[..12];

    /// <summary>A TCP port nothing listens on right now.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>
    /// Runs the real <c>clickhouse-client</c> over the native protocol: an independent peer, so what
    /// it reads proves our HTTP inserts, not our own reader. Extra settings go in as <c>--name=value</c>.
    /// </summary>
    public Task<string> RunClientAsync(string sql, params string[] settings) => RunClientAsync(Server.TcpPort, sql, settings);

    /// <inheritdoc cref="RunClientAsync(string, string[])"/>
    public static async Task<string> RunClientAsync(int tcpPort, string sql, params string[] settings)
    {
        var info = new ProcessStartInfo("/usr/bin/clickhouse-client")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "--host", "127.0.0.1", "--port", tcpPort.ToString(System.Globalization.CultureInfo.InvariantCulture) }
                     .Concat(settings).Concat(["--query", sql]))
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"clickhouse-client exited {process.ExitCode}: {await stderr}");
        }

        return await stdout;
    }
}

/// <summary>Waits for conditions with a deadline instead of sleeping a fixed time.</summary>
public static class Eventually
{
    /// <summary>Polls <paramref name="condition"/> until it holds; fails with <paramref name="what"/> after <paramref name="timeout"/>.</summary>
    public static async Task HoldsAsync(Func<bool> condition, TimeSpan timeout, Func<string> what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"not within {timeout.TotalSeconds:0.#} s: {what()}");
            }

            await Task.Delay(20);
        }
    }

    /// <summary>Polls an asynchronous <paramref name="condition"/> (e.g. a query) every 100 ms until it holds; fails with <paramref name="what"/> after <paramref name="timeout"/>.</summary>
    public static async Task HoldsAsync(Func<Task<bool>> condition, TimeSpan timeout, Func<string> what)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"not within {timeout.TotalSeconds:0.#} s: {what()}");
            }

            await Task.Delay(100);
        }
    }
}
