using FlowSec.Api.Auth;

namespace FlowSec.Sensor;

/// <summary>Sensor settings, bound from the "Sensor" configuration section (or --Sensor:Name=value).</summary>
public sealed class SensorOptions
{
    /// <summary>
    /// The relay's gRPC address, or several separated by commas: the sensor streams to the first that
    /// answers and moves to the next when it goes away (relays are stateless).
    /// </summary>
    public string Relay { get; set; } = "http://127.0.0.1:4245";

    /// <summary>This node's name on every event; defaults to the host name.</summary>
    public string Node { get; set; } = Environment.MachineName;

    /// <summary>
    /// A cgroup v2 directory (absolute, or relative to the cgroup v2 mount) this sensor speaks for:
    /// only events of its subtree are sent, so several sensors on one host act as several nodes.
    /// Empty = the whole host.
    /// </summary>
    public string Cgroup { get; set; } = "";

    /// <summary>File holding the bearer token for the relay.</summary>
    public string TokenFile { get; set; } = "";

    /// <summary>TLS to an https:// relay: its CA, and this sensor's client certificate when the relay requires one.</summary>
    public ClientTls Tls { get; set; } = new();

    /// <summary>Most events in one batch sent to the relay.</summary>
    public int BatchMaxEvents { get; set; } = 4096;

    /// <summary>How long an incomplete batch may wait before it is sent.</summary>
    public TimeSpan BatchMaxDelay { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Batches sent but not yet acked by the relay; sending waits beyond this.</summary>
    public int MaxUnackedBatches { get; set; } = 64;

    /// <summary>Never load eBPF; run the /proc fallback collectors (for hosts where eBPF cannot run, and for tests).</summary>
    public bool NoBpf { get; set; }

    /// <summary>Poll interval of the fallback collectors.</summary>
    public TimeSpan FallbackPollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Where the Prometheus endpoint (/metrics) listens; loopback by default.</summary>
    public string MetricsListen { get; set; } = "127.0.0.1:9465";

    /// <summary>Directory where batches wait while the relay is unreachable; empty = memory only (the queue's bound applies).</summary>
    public string SpoolDirectory { get; set; } = "";

    /// <summary>Most bytes the spool may hold; past it the oldest batches are dropped and counted.</summary>
    public long SpoolMaxBytes { get; set; } = 256L * 1024 * 1024;

    /// <summary>On shutdown, how long the exporter keeps sending queued events and waiting for their acks.</summary>
    public TimeSpan ShutdownDrainTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Interval of the status heartbeat sent even when no events flow.</summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Shortest time between two batches that carry the sensor's status (capture paths, counters);
    /// the first batch of each stream and every heartbeat carry it. Reading the kernel's counters
    /// takes a few dozen syscalls, too many to repeat for every batch at high event rates.
    /// </summary>
    public TimeSpan StatusInterval { get; set; } = TimeSpan.FromSeconds(1);
}
