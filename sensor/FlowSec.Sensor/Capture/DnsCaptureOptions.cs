namespace FlowSec.Sensor.Capture;

/// <summary>Settings of the DNS capture (bind from configuration or set in code).</summary>
public sealed class DnsCaptureOptions
{
    /// <summary>
    /// Which cgroup_skb/egress program names the sending process: <c>auto</c> (default: the
    /// helpers program where the kernel allows its helpers in cgroup_skb, else the task-read one),
    /// <c>helpers</c> or <c>task-read</c> (see <see cref="DnsEgressPrograms"/>). Any other value
    /// stops the sensor at start with an error.
    /// </summary>
    public string EgressProgram { get; set; } = "auto";

    /// <summary>Node name stamped on every event; defaults to the host name.</summary>
    public string Node { get; set; } = Environment.MachineName;

    /// <summary>
    /// The cgroup v2 directory the programs attach to; every socket in it and below is observed.
    /// Null or empty: the root of the first cgroup2 mount (<c>/sys/fs/cgroup/unified</c> on hybrid
    /// hosts, <c>/sys/fs/cgroup</c> on pure cgroup v2 ones), i.e. the whole node. A subtree scopes
    /// a sensor (or a test) to it.
    /// </summary>
    public string? CgroupPath { get; set; }

    /// <summary>How often the ring buffer is drained, in ms (programs submit without wake-ups). Default 5.</summary>
    public int DrainIntervalMs { get; set; } = 5;

    /// <summary>A query without a response for this long is reported with rcode "TIMEOUT". Default 5 s (resolvers' own retry interval).</summary>
    public TimeSpan QueryTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Transactions tracked at most; past it the oldest is dropped and counted (<c>dns_queries_evicted</c>).</summary>
    public int MaxTrackedQueries { get; set; } = 65_536;

    /// <summary>DNS-over-TCP streams (socket × direction) reassembled at once; past it the least recently used is dropped and counted (<c>dns_tcp_streams_evicted</c>).</summary>
    public int MaxTcpStreams { get; set; } = 4096;

    /// <summary>Bytes of one DNS-over-TCP message kept while it is reassembled; longer messages are parsed as far as kept (<c>dns_tcp_truncated</c>). Default 4 KiB.</summary>
    public int MaxTcpMessageBytes { get; set; } = 4096;

    /// <summary>Addresses the name cache keeps at most (least recently used evicted).</summary>
    public int NameCacheCapacity { get; set; } = 65_536;

    /// <summary>Shortest time a learned name is kept, whatever its TTL. Default 5 min.</summary>
    public TimeSpan NameMinTtl { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Longest time a learned name is kept, whatever its TTL. Default 24 h.</summary>
    public TimeSpan NameMaxTtl { get; set; } = TimeSpan.FromHours(24);
}
