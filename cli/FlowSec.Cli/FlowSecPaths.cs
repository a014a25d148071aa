namespace FlowSec.Cli;

/// <summary>
/// Where FlowSec keeps its files on this host: the repo checkout (found from FLOWSEC_HOME, set by
/// the ./flowsec wrapper, or above the binary), and its state directory (.flowsec/ inside it).
/// </summary>
public sealed record FlowSecPaths(string Home, string State)
{
    /// <summary>The bearer token shared by relay, sensor and CLI (mode 0600).</summary>
    public string TokenFile => Path.Combine(State, "token");

    /// <summary>The private CA and the relay's and clients' certificates of <c>flowsec up --tls</c>.</summary>
    public string TlsDir => Path.Combine(State, "tls");

    /// <summary>The relay address <c>flowsec up</c> serves (http:// or https://), the CLI's default.</summary>
    public string RelayUrlFile => Path.Combine(State, "relay-url");

    /// <summary>Built relay, sensor and CLI binaries.</summary>
    public string BinDir => Path.Combine(State, "bin");

    /// <summary>Data directory of the managed ClickHouse.</summary>
    public string ClickHouseDir => Path.Combine(State, "clickhouse");

    /// <summary>Log files of the child processes.</summary>
    public string LogDir => Path.Combine(State, "logs");

    /// <summary>Resolves the paths for this process.</summary>
    public static FlowSecPaths Resolve()
    {
        var home = Environment.GetEnvironmentVariable("FLOWSEC_HOME");
        if (string.IsNullOrEmpty(home))
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "FlowSec.sln")))
                {
                    home = dir.FullName;
                    break;
                }
            }
        }
        home ??= Directory.GetCurrentDirectory();
        var state = Environment.GetEnvironmentVariable("FLOWSEC_STATE");
        return new FlowSecPaths(home, string.IsNullOrEmpty(state) ? Path.Combine(home, ".flowsec") : state);
    }
}
