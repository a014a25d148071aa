using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// libbpf entry points the UDP flow and drop captures need beyond <see cref="Libbpf"/>: cgroup
/// attach, map sizing, batched map reads and the kernel's BTF. Kept in their own class so
/// additions to <see cref="Libbpf"/> by other captures cannot collide with them. Same error
/// convention: pointer results are NULL with errno set, int results are <c>-errno</c>.
/// </summary>
internal static unsafe partial class LibbpfMaps
{
    private const string Lib = "libbpf.so.1";

    /// <summary>BTF_KIND_ENUM (4-byte values).</summary>
    internal const uint BtfKindEnum = 6;

    /// <summary>Subset of <c>struct bpf_map_batch_opts</c> (sz, elem_flags, flags).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct MapBatchOpts
    {
        public nuint Size;
        public ulong ElemFlags;
        public ulong Flags;
    }

    /// <summary><c>struct btf_type</c>: name offset, info (vlen, kind), size.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct BtfType
    {
        public uint NameOffset;
        public uint Info;
        public uint SizeOrType;

        /// <summary>Members (enumerators) that follow the type.</summary>
        public readonly int VLen => (int)(Info & 0xffff);

        /// <summary>BTF_KIND_*.</summary>
        public readonly uint Kind => (Info >> 24) & 0x1f;
    }

    /// <summary><c>struct btf_enum</c>: one enumerator.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct BtfEnum
    {
        public uint NameOffset;
        public int Value;
    }

    [LibraryImport(Lib, EntryPoint = "bpf_object__find_program_by_name")]
    internal static partial nint ObjectFindProgramByName(nint obj, [MarshalAs(UnmanagedType.LPUTF8Str)] string name);

    [LibraryImport(Lib, EntryPoint = "bpf_program__attach_cgroup", SetLastError = true)]
    internal static partial nint ProgramAttachCgroup(nint prog, int cgroupFd);

    [LibraryImport(Lib, EntryPoint = "bpf_map__set_max_entries")]
    internal static partial int MapSetMaxEntries(nint map, uint maxEntries);

    [LibraryImport(Lib, EntryPoint = "bpf_map_lookup_batch")]
    internal static partial int MapLookupBatch(int fd, void* inBatch, void* outBatch, void* keys, void* values, uint* count, MapBatchOpts* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_map_lookup_and_delete_batch")]
    internal static partial int MapLookupAndDeleteBatch(int fd, void* inBatch, void* outBatch, void* keys, void* values, uint* count, MapBatchOpts* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_map_lookup_and_delete_elem")]
    internal static partial int MapLookupAndDeleteElem(int fd, void* key, void* value);

    [LibraryImport(Lib, EntryPoint = "btf__load_vmlinux_btf", SetLastError = true)]
    internal static partial nint BtfLoadVmlinux();

    [LibraryImport(Lib, EntryPoint = "btf__find_by_name_kind")]
    internal static partial int BtfFindByNameKind(nint btf, [MarshalAs(UnmanagedType.LPUTF8Str)] string name, uint kind);

    [LibraryImport(Lib, EntryPoint = "btf__type_by_id")]
    internal static partial BtfType* BtfTypeById(nint btf, uint id);

    [LibraryImport(Lib, EntryPoint = "btf__name_by_offset")]
    internal static partial byte* BtfNameByOffset(nint btf, uint offset);

    [LibraryImport(Lib, EntryPoint = "btf__free")]
    internal static partial void BtfFree(nint btf);

    // The cgroup directory is opened with open(2): .NET will not open a directory as a file handle.
    [LibraryImport("libc.so.6", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    internal static partial int Open(string path, int flags);

    [LibraryImport("libc.so.6", EntryPoint = "close")]
    internal static partial int Close(int fd);

    /// <summary>O_RDONLY | O_DIRECTORY | O_CLOEXEC.</summary>
    internal const int OpenDirectoryFlags = 0x10000 | 0x80000;
}
