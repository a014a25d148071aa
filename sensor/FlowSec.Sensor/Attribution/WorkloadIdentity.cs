using System.Text.RegularExpressions;

namespace FlowSec.Sensor.Attribution;

/// <summary>Who an endpoint is, beyond its process: container, pod and workload.</summary>
/// <param name="Workload">A stable name for the thing that runs: pod owner, cgroup directory, or process name on the host.</param>
/// <param name="ContainerId">Container id when the cgroup path names one.</param>
/// <param name="PodUid">Kubernetes pod UID when the cgroup path names one.</param>
/// <param name="Pod">Pod name, when a metadata source knows it.</param>
/// <param name="Namespace">Pod namespace, when a metadata source knows it.</param>
/// <param name="Labels">Pod labels, when a metadata source knows them.</param>
public sealed record WorkloadIdentity(
    string Workload,
    string ContainerId = "",
    string PodUid = "",
    string Pod = "",
    string Namespace = "",
    IReadOnlyDictionary<string, string>? Labels = null);

/// <summary>
/// Pod metadata for containers and pod UIDs (Kubernetes list/watch comes in its own component);
/// without one, identities are named from cgroup paths alone.
/// </summary>
public interface IPodMetadataSource
{
    /// <summary>Returns the pod identity for a container or pod UID, or null when unknown.</summary>
    WorkloadIdentity? Lookup(string containerId, string podUid);
}

/// <summary>
/// Names a cgroup path: container runtimes' path patterns (docker, containerd, cri-o; systemd and
/// cgroupfs drivers) give a container id and pod UID; any other directory is a workload by its name.
/// </summary>
public static partial class WorkloadNamer
{
    /// <summary>The identity for a cgroup path, or null for the root cgroup (host processes).</summary>
    public static WorkloadIdentity? FromCgroupPath(string? path)
    {
        if (string.IsNullOrEmpty(path) || path == "/")
        {
            return null;
        }
        var container = ContainerPattern().Match(path);
        var pod = PodPattern().Match(path);
        var containerId = container.Success ? container.Groups["id"].Value : "";
        var podUid = pod.Success ? pod.Groups["uid"].Value.Replace('_', '-') : "";
        var last = path[(path.LastIndexOf('/') + 1)..];
        var workload = containerId.Length > 0 ? containerId[..12] : SuffixPattern().Replace(last, "");
        return new WorkloadIdentity(workload, containerId, podUid);
    }

    // docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope (systemd driver);
    // /docker/<id>, /kubepods/.../<id> (cgroupfs driver). Container ids are 64 hex digits.
    [GeneratedRegex(@"(?:docker-|cri-containerd-|crio-|/docker/|/)(?<id>[0-9a-f]{64})(?:\.scope)?$")]
    private static partial Regex ContainerPattern();

    // kubepods-besteffort-pod<uid>.slice (systemd driver, '-' written as '_') or /pod<uid>/ (cgroupfs).
    [GeneratedRegex(@"pod(?<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")]
    private static partial Regex PodPattern();

    [GeneratedRegex(@"\.(scope|slice|service)$")]
    private static partial Regex SuffixPattern();
}
