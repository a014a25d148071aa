using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// Classic tracepoints attach through a perf event whose id libbpf reads from tracefs
/// (<c>/sys/kernel/tracing/events/…/id</c>). Hosts without systemd's tracefs mount (this VM, many
/// minimal nodes) have none, so the sensor mounts it once, as perf and bpftrace users would.
/// It stays mounted afterwards: other tools may start using it, and it changes nothing else.
/// </summary>
internal static partial class Tracefs
{
    private const string Path = "/sys/kernel/tracing";
    private const string DebugfsPath = "/sys/kernel/debug/tracing";

    [LibraryImport("libc.so.6", EntryPoint = "mount", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Mount(string source, string target, string fileSystemType, nuint flags, nint data);

    /// <summary>Makes tracefs available; returns why not when it cannot, else null.</summary>
    public static string? EnsureMounted(ILogger logger)
    {
        if (Directory.Exists($"{Path}/events") || Directory.Exists($"{DebugfsPath}/events"))
        {
            return null;
        }
        if (Mount("tracefs", Path, "tracefs", 0, 0) != 0)
        {
            string error = $"tracefs is not mounted and mounting it at {Path} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}";
            logger.LogWarning("{Error}", error);
            return error;
        }
        logger.LogInformation("Mounted tracefs at {Path} (needed to attach tracepoints)", Path);
        return null;
    }
}
