using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Capture;

/// <summary>One probed kernel capability.</summary>
/// <param name="Name">What was probed.</param>
/// <param name="Available">Whether this kernel offers it to us.</param>
/// <param name="Detail">Why not, or what was found.</param>
public sealed record KernelFeature(string Name, bool Available, string Detail);

/// <summary>
/// What this kernel lets the sensor do, probed once at start (BTF, program and map types through
/// libbpf's probes, attach points in tracefs). The sensor uses eBPF capture when the essentials
/// are there and the labelled fallback collectors otherwise; nothing here loads a real program.
/// </summary>
public sealed partial class KernelFeatures
{
    private KernelFeatures(IReadOnlyList<KernelFeature> features, string? disabledReason)
    {
        Features = features;
        BpfUnusableReason = disabledReason ?? features.FirstOrDefault(f => Essential.Contains(f.Name) && !f.Available) switch
        {
            { } missing => $"{missing.Name}: {missing.Detail}",
            null => null,
        };
    }

    private static readonly HashSet<string> Essential = ["btf", "bpf_prog_tracepoint", "bpf_map_ringbuf"];

    /// <summary>Every probed capability.</summary>
    public IReadOnlyList<KernelFeature> Features { get; }

    /// <summary>Why eBPF capture cannot run here, or null when it can.</summary>
    public string? BpfUnusableReason { get; }

    /// <summary>True when eBPF capture can run.</summary>
    public bool BpfUsable => BpfUnusableReason is null;

    /// <summary>Probes the running kernel; <paramref name="noBpf"/> forces the fallback (for testing).</summary>
    public static KernelFeatures Probe(bool noBpf)
    {
        if (noBpf)
        {
            return new KernelFeatures([], "disabled with --Sensor:NoBpf (forced fallback)");
        }
        var features = new List<KernelFeature>
        {
            Exists("btf", "/sys/kernel/btf/vmlinux", "kernel BTF for CO-RE"),
            ProgType("bpf_prog_tracepoint", ProgTypeTracepoint),
            ProgType("bpf_prog_tracing (tp_btf)", ProgTypeTracing),
            ProgType("bpf_prog_cgroup_skb", ProgTypeCgroupSkb),
            MapType("bpf_map_ringbuf", MapTypeRingbuf),
            MapType("bpf_map_lru_hash", MapTypeLruHash),
            Exists("tracepoint sock/inet_sock_set_state", "/sys/kernel/tracing/events/sock/inet_sock_set_state", "tracefs event"),
            Exists("tracepoint skb/kfree_skb", "/sys/kernel/tracing/events/skb/kfree_skb", "tracefs event"),
            Exists("kprobes", "/sys/kernel/tracing/kprobe_events", "kprobe_events in tracefs"),
            Exists("cgroup v2", CgroupRoot(), "cgroup2 mount"),
        };
        // Logged at start: why the DNS capture picks the egress program it does.
        features.AddRange(DnsEgressPrograms.RequiredHelpers.Select(h => Helper(ProgTypeCgroupSkb, "cgroup_skb", h)));
        return new KernelFeatures(features, null);
    }

    /// <summary>
    /// Whether programs of type cgroup_skb may call <paramref name="helper"/> on this kernel
    /// (libbpf loads a tiny program calling it and reads the verifier's answer). A failed probe
    /// (no privileges, no BPF) counts as no.
    /// </summary>
    public static bool CgroupSkbHasHelper(BpfHelper helper) => Libbpf.ProbeHelper(ProgTypeCgroupSkb, helper.Id, 0) == 1;

    private static KernelFeature Helper(int progType, string progTypeName, BpfHelper helper)
    {
        int result = Libbpf.ProbeHelper(progType, helper.Id, 0);
        return new KernelFeature($"helper {helper} in {progTypeName}", result == 1,
            result == 1 ? "allowed" : result == 0 ? "not allowed by this kernel" : $"probe failed ({Marshal.GetPInvokeErrorMessage(-result)})");
    }

    private static string CgroupRoot() =>
        File.Exists("/sys/fs/cgroup/unified/cgroup.procs") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup/cgroup.procs";

    private static KernelFeature Exists(string name, string path, string what) =>
        File.Exists(path) || Directory.Exists(path)
            ? new KernelFeature(name, true, path)
            : new KernelFeature(name, false, $"no {what} at {path}");

    private static KernelFeature ProgType(string name, int type)
    {
        var result = ProbeProgType(type, 0);
        return new KernelFeature(name, result == 1, result == 1 ? "supported" : result == 0 ? "not supported by this kernel" : $"probe failed ({Marshal.GetPInvokeErrorMessage(-result)})");
    }

    private static KernelFeature MapType(string name, int type)
    {
        var result = ProbeMapType(type, 0);
        return new KernelFeature(name, result == 1, result == 1 ? "supported" : result == 0 ? "not supported by this kernel" : $"probe failed ({Marshal.GetPInvokeErrorMessage(-result)})");
    }

    // enum bpf_prog_type / bpf_map_type values from the kernel UAPI.
    private const int ProgTypeTracepoint = 5;
    private const int ProgTypeCgroupSkb = 8;
    private const int ProgTypeTracing = 26;
    private const int MapTypeLruHash = 9;
    private const int MapTypeRingbuf = 27;

    [LibraryImport("libbpf.so.1", EntryPoint = "libbpf_probe_bpf_prog_type")]
    private static partial int ProbeProgType(int progType, nint opts);

    [LibraryImport("libbpf.so.1", EntryPoint = "libbpf_probe_bpf_map_type")]
    private static partial int ProbeMapType(int mapType, nint opts);
}
