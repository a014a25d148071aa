namespace FlowSec.Sensor.Capture;

/// <summary>
/// A BPF helper function as the kernel numbers it (<c>enum bpf_func_id</c> in the UAPI
/// <c>linux/bpf.h</c>). Which helpers a program type may call differs between kernels, and a
/// program calling one its type lacks is refused by the verifier as a whole.
/// </summary>
/// <param name="Name">The helper's name without the <c>bpf_</c> prefix, as <c>__BPF_FUNC_MAPPER</c> spells it.</param>
/// <param name="Id">Its <c>enum bpf_func_id</c> value.</param>
public sealed record BpfHelper(string Name, int Id)
{
    /// <summary><c>bpf_get_current_pid_tgid</c>.</summary>
    public static readonly BpfHelper GetCurrentPidTgid = new("get_current_pid_tgid", 14);

    /// <summary><c>bpf_get_current_task</c>.</summary>
    public static readonly BpfHelper GetCurrentTask = new("get_current_task", 35);

    /// <summary><c>bpf_get_current_cgroup_id</c>.</summary>
    public static readonly BpfHelper GetCurrentCgroupId = new("get_current_cgroup_id", 80);

    /// <summary><c>bpf_probe_read_kernel</c>.</summary>
    public static readonly BpfHelper ProbeReadKernel = new("probe_read_kernel", 113);

    /// <summary><c>bpf_get_current_task_btf</c>.</summary>
    public static readonly BpfHelper GetCurrentTaskBtf = new("get_current_task_btf", 158);

    /// <summary>"bpf_get_current_pid_tgid".</summary>
    public override string ToString() => "bpf_" + Name;
}
