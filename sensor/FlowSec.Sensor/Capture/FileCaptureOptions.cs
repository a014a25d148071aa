namespace FlowSec.Sensor.Capture;

/// <summary>How the file capture learns a watched syscall's result.</summary>
public enum FileResultMode
{
    /// <summary>Task work where the kernel has it (6.18+), else exit tracepoints.</summary>
    Auto,

    /// <summary>
    /// BPF task work scheduled at syscall entry, run as the thread returns to user space: no
    /// exit tracepoint is attached, so unwatched calls pay for one hook instead of two.
    /// </summary>
    TaskWork,

    /// <summary>A <c>sys_exit_*</c> tracepoint per syscall (any kernel with syscall tracepoints).</summary>
    ExitTracepoints,
}

/// <summary>Settings of the file capture (bind from configuration or set in code).</summary>
public sealed class FileCaptureOptions
{
    /// <summary>
    /// Watched by default: credentials and configuration (/etc, /root, service-account secrets
    /// under both names of /var/run), system binaries (both names on merged-/usr systems), and
    /// users' homes (where ~/.ssh lives).
    /// </summary>
    public static readonly IReadOnlyList<string> DefaultWatchedPrefixes =
        ["/etc", "/root", "/var/run/secrets", "/run/secrets", "/bin", "/usr/bin", "/home/"];

    /// <summary>Node name stamped on every event; defaults to the host name.</summary>
    public string Node { get; set; } = Environment.MachineName;

    /// <summary>How often the ring buffer is drained, in ms (records are submitted without wake-ups). Default 5.</summary>
    public int DrainIntervalMs { get; set; } = 5;

    /// <summary>
    /// Path prefixes whose open/create/write/unlink/rename are reported, matched per component
    /// ("/etc" covers "/etc/shadow", not "/etcetera"; "/home/" covers only what is below /home).
    /// Configuration binding adds to the defaults (the binder appends to lists); assign a new
    /// list in code to replace them. At most 500 prefixes in all three lists together (the kernel
    /// trie holds 1024 keys, two per prefix).
    /// </summary>
    public IList<string> WatchedPrefixes { get; set; } = new List<string>(DefaultWatchedPrefixes);

    /// <summary>
    /// Read by nearly every process (the dynamic loader's cache, libc's resolver, time zone and
    /// name-service configuration): their reads are noise and, with task-work results, the
    /// costliest events to collect. Changes to them (a write to /etc/ld.so.cache, a swapped
    /// resolv.conf) are still reported.
    /// </summary>
    public static readonly IReadOnlyList<string> DefaultChangesOnlyPrefixes =
        ["/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/resolv.conf", "/etc/hosts", "/etc/gai.conf"];

    /// <summary>
    /// Prefixes inside watched ones of which only creates, writes, unlinks and renames are
    /// reported, not reads (the longest match decides). Binding adds to the defaults.
    /// </summary>
    public IList<string> ChangesOnlyPrefixes { get; set; } = new List<string>(DefaultChangesOnlyPrefixes);

    /// <summary>Prefixes inside watched ones that are not reported at all (the longest match decides).</summary>
    public IList<string> ExcludedPrefixes { get; set; } = new List<string>();

    /// <summary>How results are collected; <see cref="FileResultMode.Auto"/> by default.</summary>
    public FileResultMode ResultMode { get; set; } = FileResultMode.Auto;
}
