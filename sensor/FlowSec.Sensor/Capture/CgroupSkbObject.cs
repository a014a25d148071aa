using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// An embedded BPF object whose <c>cgroup_skb/*</c> programs are attached to one cgroup v2
/// directory (and so run for every socket in its subtree). libbpf has no automatic attach for
/// cgroup programs, they need the directory; opening, loading and unloading are
/// <see cref="BpfObject"/>'s. Attaching goes through BPF links (bpf_link_create), which coexist
/// with other programs on the same cgroup (multi-attach) and are detached when destroyed, so
/// nothing stays behind after dispose.
/// </summary>
internal sealed class CgroupSkbObject : BpfObject
{
    // Open only while AttachAll runs: each link holds its own reference to the cgroup.
    private int _cgroupFd = -1;

    private CgroupSkbObject(string name, string cgroupPath)
        : base(name)
    {
        CgroupPath = cgroupPath;
    }

    /// <summary>The cgroup v2 directory the programs are attached to.</summary>
    public string CgroupPath { get; }

    private protected override bool NamesProgramsThatFailedToLoad => false;

    /// <summary>
    /// Opens the embedded object, applies <paramref name="mapSizes"/> (map name → max entries),
    /// loads it (only the programs <paramref name="loadProgram"/> accepts, by name, when given:
    /// alternatives for different kernels must not load together) and attaches every loaded
    /// program to <paramref name="cgroupPath"/>. Throws
    /// <see cref="BpfException"/> when the object cannot load or the directory cannot be opened;
    /// a program that fails to attach is recorded in <see cref="BpfObject.Programs"/>.
    /// </summary>
    public static CgroupSkbObject LoadEmbedded(string resourceName, string cgroupPath, IReadOnlyDictionary<string, uint> mapSizes, ILogger logger,
        Func<string, bool>? loadProgram = null) =>
        Load(new CgroupSkbObject(resourceName, cgroupPath), ReadResource(resourceName), logger, loadProgram, mapSizes);

    private protected override void AttachAll(ILogger logger)
    {
        _cgroupFd = LibbpfMaps.Open(CgroupPath, LibbpfMaps.OpenDirectoryFlags);
        if (_cgroupFd < 0)
        {
            throw new BpfException($"opening cgroup {CgroupPath}", Marshal.GetLastPInvokeError());
        }
        try
        {
            base.AttachAll(logger);
        }
        finally
        {
            LibbpfMaps.Close(_cgroupFd);
            _cgroupFd = -1;
        }
    }

    private protected override nint AttachProgram(nint prog, string name, string section) =>
        Libbpf.CheckPointer(LibbpfMaps.ProgramAttachCgroup(prog, _cgroupFd), $"attaching program '{name}' ({section}) to {CgroupPath}");

    private protected override void LogAttached(ILogger logger, string name, string section, uint id) =>
        logger.LogInformation("BPF program {Program} attached at {Section} on {Cgroup} (id {Id})", name, section, CgroupPath, id);
}
