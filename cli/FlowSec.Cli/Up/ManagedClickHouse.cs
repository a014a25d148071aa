using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security;

namespace FlowSec.Cli.Up;

/// <summary>
/// A loopback-only <c>clickhouse-server</c> that FlowSec runs for itself when no external ClickHouse
/// is configured: its own config and users files and all its state under one data directory, run as
/// a child process (not <c>--daemon</c>) so stopping FlowSec stops it. Starting again on the same
/// directory reuses the data.
/// </summary>
public sealed partial class ManagedClickHouse : IAsyncDisposable
{
    private static readonly string[] ServerPaths = ["/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"];
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(15);

    private readonly Process _process;
    private bool _stopped;

    private ManagedClickHouse(Process process, string dataDir, int httpPort, int tcpPort)
    {
        _process = process;
        DataDirectory = dataDir;
        HttpPort = httpPort;
        TcpPort = tcpPort;
    }

    /// <summary>HTTP URL of the server, e.g. <c>http://127.0.0.1:18123</c>.</summary>
    public string Url => $"http://127.0.0.1:{HttpPort}";

    /// <summary>HTTP port on 127.0.0.1.</summary>
    public int HttpPort { get; }

    /// <summary>Native protocol port on 127.0.0.1 (for <c>clickhouse-client --port</c>).</summary>
    public int TcpPort { get; }

    /// <summary>Directory holding config, data and logs.</summary>
    public string DataDirectory { get; }

    /// <summary>Server's stdout and stderr.</summary>
    public string OutputLogPath => Path.Combine(DataDirectory, "log", "stdout.log");

    /// <summary>Process id of the server.</summary>
    public int ProcessId => _process.Id;

    /// <summary>
    /// Writes the config into <paramref name="dataDir"/>, starts the server and waits until
    /// <c>GET /ping</c> answers <c>Ok.</c>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The server is not installed, exited, or did not answer in time (the message holds its log).</exception>
    public static async Task<ManagedClickHouse> StartAsync(string dataDir, int httpPort, int tcpPort, CancellationToken cancellationToken)
    {
        dataDir = Path.GetFullPath(dataDir);
        var server = ServerPaths.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("clickhouse-server is not installed (apt-get install clickhouse-server), or pass an external ClickHouse URL");
        foreach (var dir in new[] { "data", "tmp", "user_files", "format_schemas", "log" })
        {
            Directory.CreateDirectory(Path.Combine(dataDir, dir));
        }

        var configPath = Path.Combine(dataDir, "config.xml");
        await File.WriteAllTextAsync(configPath, ConfigXml(dataDir, httpPort, tcpPort), cancellationToken);
        await File.WriteAllTextAsync(Path.Combine(dataDir, "users.xml"), UsersXml, cancellationToken);
        await StopLeftoverAsync(dataDir, configPath);

        var pidPath = Path.Combine(dataDir, "clickhouse.pid");
        var logPath = Path.Combine(dataDir, "log", "stdout.log");
        // The shell only opens the log and execs, so the pid is the server's and SIGTERM reaches it;
        // output goes to a file, never through a pipe that could fill while FlowSec is busy.
        var info = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, WorkingDirectory = dataDir };
        foreach (var arg in new[] { "-c", "exec \"$0\" --config-file=\"$1\" >>\"$2\" 2>&1", server, configPath, logPath })
        {
            info.ArgumentList.Add(arg);
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException("could not start " + server);
        await File.WriteAllTextAsync(pidPath, process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), CancellationToken.None);
        var instance = new ManagedClickHouse(process, dataDir, httpPort, tcpPort);
        try
        {
            await instance.WaitReadyAsync(cancellationToken);
            return instance;
        }
        catch
        {
            await instance.DisposeAsync();
            throw;
        }
    }

    /// <summary>Stops the server: SIGTERM, then a kill if it has not exited within <paramref name="grace"/>.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        if (_stopped)
        {
            return;
        }

        _stopped = true;
        if (!_process.HasExited)
        {
            await TerminateAsync(_process, grace);
        }

        File.Delete(Path.Combine(DataDirectory, "clickhouse.pid"));
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await StopAsync(StopGrace);
        _process.Dispose();
    }

    private async Task WaitReadyAsync(CancellationToken cancellationToken)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"clickhouse-server exited with code {_process.ExitCode} during start:\n{LogTail()}");
            }

            try
            {
                if ((await http.GetStringAsync($"{Url}/ping", cancellationToken)).Trim() == "Ok.")
                {
                    return;
                }
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
            {
                // not listening yet
            }

            if (deadline.Elapsed > StartTimeout)
            {
                throw new InvalidOperationException($"clickhouse-server did not answer {Url}/ping within {StartTimeout.TotalSeconds:0} s:\n{LogTail()}");
            }

            // Polling a condition, not a fixed wait: the loop ends as soon as the server answers.
            await Task.Delay(50, cancellationToken);
        }
    }

    private string LogTail()
    {
        var lines = new List<string>();
        foreach (var path in new[] { OutputLogPath, Path.Combine(DataDirectory, "log", "server.err.log") })
        {
            if (File.Exists(path))
            {
                using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                lines.AddRange(new StreamReader(stream).ReadToEnd().Split('\n').TakeLast(15).Prepend($"--- {path}"));
            }
        }

        return string.Join('\n', lines);
    }

    // A server left running by a FlowSec that died without stopping it would hold the directory's
    // lock and the ports; it is recognised by its pid file and its command line, and stopped.
    private static async Task StopLeftoverAsync(string dataDir, string configPath)
    {
        var pidPath = Path.Combine(dataDir, "clickhouse.pid");
        if (!File.Exists(pidPath) || !int.TryParse(await File.ReadAllTextAsync(pidPath), out var pid))
        {
            return;
        }

        try
        {
            var cmdline = await File.ReadAllTextAsync($"/proc/{pid}/cmdline");
            if (cmdline.Contains("--config-file=" + configPath, StringComparison.Ordinal))
            {
                using var leftover = Process.GetProcessById(pid);
                await TerminateAsync(leftover, StopGrace);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            // no such process any more
        }
    }

    private static async Task TerminateAsync(Process process, TimeSpan grace)
    {
        _ = Kill(process.Id, 15); // SIGTERM: ClickHouse finishes merges in flight and exits
        using var timeout = new CancellationTokenSource(grace);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            await process.WaitForExitAsync();
        }
    }

    private static string ConfigXml(string dataDir, int httpPort, int tcpPort)
    {
        string P(string sub) => SecurityElement.Escape(Path.Combine(dataDir, sub)) + "/";
        string F(string sub) => SecurityElement.Escape(Path.Combine(dataDir, sub));
        return $"""
            <?xml version="1.0"?>
            <!-- Written by FlowSec on every start; edits are overwritten. -->
            <yandex>
                <logger>
                    <level>information</level>
                    <log>{F("log/server.log")}</log>
                    <errorlog>{F("log/server.err.log")}</errorlog>
                    <size>100M</size>
                    <count>3</count>
                </logger>
                <listen_host>127.0.0.1</listen_host>
                <http_port>{httpPort}</http_port>
                <tcp_port>{tcpPort}</tcp_port>
                <path>{P("data")}</path>
                <tmp_path>{P("tmp")}</tmp_path>
                <user_files_path>{P("user_files")}</user_files_path>
                <format_schema_path>{P("format_schemas")}</format_schema_path>
                <users_config>{F("users.xml")}</users_config>
                <default_profile>default</default_profile>
                <default_database>default</default_database>
                <mlock_executable>false</mlock_executable>
                <mark_cache_size>536870912</mark_cache_size>
                <uncompressed_cache_size>536870912</uncompressed_cache_size>
                <max_concurrent_queries>100</max_concurrent_queries>
            </yandex>
            """;
    }

    private const string UsersXml = """
        <?xml version="1.0"?>
        <!-- Written by FlowSec on every start; edits are overwritten. -->
        <yandex>
            <profiles>
                <default>
                    <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
                </default>
            </profiles>
            <users>
                <default>
                    <password></password>
                    <networks>
                        <ip>127.0.0.1</ip>
                        <ip>::1</ip>
                    </networks>
                    <profile>default</profile>
                    <quota>default</quota>
                </default>
            </users>
            <quotas>
                <default>
                    <interval>
                        <duration>3600</duration>
                        <queries>0</queries>
                        <errors>0</errors>
                        <result_rows>0</result_rows>
                        <read_rows>0</read_rows>
                        <execution_time>0</execution_time>
                    </interval>
                </default>
            </quotas>
        </yandex>
        """;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
