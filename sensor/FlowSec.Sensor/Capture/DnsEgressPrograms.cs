namespace FlowSec.Sensor.Capture;

/// <summary>Which DNS egress program the sensor loads (<c>--Sensor:Dns:EgressProgram</c>).</summary>
public enum DnsEgressMode
{
    /// <summary>The helpers program where the kernel allows its helpers in cgroup_skb, else task-read.</summary>
    Auto,

    /// <summary>Always <see cref="DnsEgressPrograms.HelpersProgram"/>.</summary>
    Helpers,

    /// <summary>Always <see cref="DnsEgressPrograms.TaskReadProgram"/>.</summary>
    TaskRead,
}

/// <summary>The egress program chosen, and why (shown as the capture path's reason in status).</summary>
/// <param name="Program">The program loaded and attached.</param>
/// <param name="NotLoaded">Its alternative, left out of the load.</param>
/// <param name="Reason">Why this one, for people reading <c>flowsec status</c>.</param>
public sealed record DnsEgressChoice(string Program, string NotLoaded, string Reason);

/// <summary>
/// bpf/dns.bpf.c has two cgroup_skb/egress programs that write the same record and differ in how
/// they name the sending process: <see cref="HelpersProgram"/> calls the current-task helpers,
/// which cgroup_skb programs may not call on older kernels (Linux 6.1 refuses the whole program),
/// <see cref="TaskReadProgram"/> reads the task through <c>bpf_get_current_task()</c> and CO-RE.
/// Exactly one is loaded; this picks it from the kernel's helper probe.
/// </summary>
public static class DnsEgressPrograms
{
    /// <summary>The program that asks the helpers (cheaper: no probe reads).</summary>
    public const string HelpersProgram = "dns_egress";

    /// <summary>The program that reads the current task with CO-RE.</summary>
    public const string TaskReadProgram = "dns_egress_task_read";

    /// <summary>What <see cref="HelpersProgram"/> calls beyond what every cgroup_skb program may.</summary>
    public static readonly IReadOnlyList<BpfHelper> RequiredHelpers =
        [BpfHelper.GetCurrentPidTgid, BpfHelper.GetCurrentCgroupId, BpfHelper.GetCurrentTaskBtf];

    /// <summary>The accepted values of <c>--Sensor:Dns:EgressProgram</c>, as an error message lists them.</summary>
    public const string ModeValues = "auto, helpers or task-read";

    /// <summary>Parses <c>auto|helpers|task-read</c> (case-insensitive; null or empty is auto).</summary>
    public static bool TryParseMode(string? value, out DnsEgressMode mode)
    {
        mode = DnsEgressMode.Auto;
        switch (value?.Trim().ToLowerInvariant())
        {
            case null or "" or "auto":
                return true;
            case "helpers":
                mode = DnsEgressMode.Helpers;
                return true;
            case "task-read":
                mode = DnsEgressMode.TaskRead;
                return true;
            default:
                return false;
        }
    }

    /// <summary>As <see cref="TryParseMode"/>; throws <see cref="ArgumentException"/> naming the option and its values.</summary>
    public static DnsEgressMode ParseMode(string? value) =>
        TryParseMode(value, out var mode)
            ? mode
            : throw new ArgumentException($"--Sensor:Dns:EgressProgram must be {ModeValues}, not '{value}'", nameof(value));

    /// <summary>
    /// The egress program for <paramref name="mode"/> on a kernel whose cgroup_skb programs may
    /// call a helper when <paramref name="cgroupSkbHas"/> says so (asked only in auto mode).
    /// </summary>
    public static DnsEgressChoice Choose(DnsEgressMode mode, Func<BpfHelper, bool> cgroupSkbHas)
    {
        switch (mode)
        {
            case DnsEgressMode.Helpers:
                return new(HelpersProgram, TaskReadProgram, "forced by --Sensor:Dns:EgressProgram=helpers");
            case DnsEgressMode.TaskRead:
                return new(TaskReadProgram, HelpersProgram, "forced by --Sensor:Dns:EgressProgram=task-read");
        }
        var missing = RequiredHelpers.Where(h => !cgroupSkbHas(h)).ToList();
        return missing.Count == 0
            ? new(HelpersProgram, TaskReadProgram, $"auto: cgroup_skb may call {string.Join(", ", RequiredHelpers)}")
            : new(TaskReadProgram, HelpersProgram, $"auto: this kernel's cgroup_skb programs lack {string.Join(", ", missing)}; sender read via bpf_get_current_task()");
    }
}
