using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// libbpf entry points the process and file captures need beyond <see cref="Libbpf"/>: choosing
/// which programs of an object load, and writing map elements. Kept in their own class so
/// additions to <see cref="Libbpf"/> by other captures cannot collide with them. Same error
/// convention: int results are <c>-errno</c>.
/// </summary>
internal static unsafe partial class LibbpfSelection
{
    private const string Lib = "libbpf.so.1";

    /// <summary>BPF_ANY: create or replace.</summary>
    internal const ulong UpdateAny = 0;

    [LibraryImport(Lib, EntryPoint = "bpf_program__set_autoload")]
    internal static partial int ProgramSetAutoload(nint prog, [MarshalAs(UnmanagedType.U1)] bool autoload);

    [LibraryImport(Lib, EntryPoint = "bpf_program__autoload")]
    [return: MarshalAs(UnmanagedType.U1)]
    internal static partial bool ProgramAutoload(nint prog);

    [LibraryImport(Lib, EntryPoint = "bpf_map_update_elem")]
    internal static partial int MapUpdateElem(int fd, void* key, void* value, ulong flags);
}
