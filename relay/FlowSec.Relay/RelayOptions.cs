namespace FlowSec.Relay;

/// <summary>Relay settings, bound from the "Relay" configuration section (or --Relay:Name=value).</summary>
public sealed class RelayOptions
{
    /// <summary>Address of the gRPC endpoint (ingest from sensors, observer for the CLI). HTTP/2 only.</summary>
    public string GrpcListen { get; set; } = "127.0.0.1:4245";

    /// <summary>Address of the web UI and its SignalR hub.</summary>
    public string UiListen { get; set; } = "127.0.0.1:12000";

    /// <summary>File holding the bearer token sensors and CLI must present. Required: the relay refuses to start without one.</summary>
    public string TokenFile { get; set; } = "";

    /// <summary>Directory of the static UI; empty = find <c>ui/</c> above the binary.</summary>
    public string UiDirectory { get; set; } = "";

    /// <summary>TLS (and mutual TLS) on the gRPC port; off by default (loopback, token only).</summary>
    public RelayTlsOptions Tls { get; set; } = new();

    /// <summary>
    /// Events received and parsed but not yet taken by storage, at most; more make ingest wait (and
    /// so sensors). Parsed events are the relay's largest objects, so this bounds its memory.
    /// </summary>
    public int StorageQueueEvents { get; set; } = Pipeline.EventPipeline.DefaultStorageCapacityEvents;

    /// <summary>
    /// How long an HTTP/2 connection may send nothing before the relay pings it. A sensor that
    /// vanished without FIN or RST (its host frozen, its network gone) would otherwise stay
    /// connected, with its unacked batches queued, until TCP gives up many minutes later. A live
    /// sensor sends a heartbeat every 2 s, so pings go only to quiet or dead connections.
    /// <see cref="TimeSpan.Zero"/> turns pings off.
    /// </summary>
    public TimeSpan KeepAlivePingDelay { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long the relay waits for any frame after a ping before it closes the connection (its streams end, the node shows disconnected).</summary>
    public TimeSpan KeepAlivePingTimeout { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>The URL users open, as printed by status.</summary>
    public string UiUrl => "http://" + UiListen + "/";
}
