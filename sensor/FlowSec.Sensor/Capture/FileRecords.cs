using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Capture;

// C# mirrors of the file section of bpf/flowsec.h, the single source of truth for
// kernel-to-user layouts. FileLayoutTests compares them with the BTF of the compiled object.

/// <summary>Mirror of <c>enum fs_file_record_kind</c>.</summary>
internal enum FileRecordKind : uint
{
    /// <summary>FS_RECORD_FILE: a syscall on a watched path, with its result.</summary>
    File = 64,
}

/// <summary>Mirror of <c>enum fs_file_op</c>.</summary>
internal enum FileOp : ushort
{
    /// <summary>FS_FILE_OP_OPEN: opened for reading.</summary>
    Open = 1,

    /// <summary>FS_FILE_OP_CREATE: opened with O_CREAT (or creat()).</summary>
    Create = 2,

    /// <summary>FS_FILE_OP_WRITE: opened with O_WRONLY, O_RDWR or O_TRUNC.</summary>
    Write = 3,

    /// <summary>FS_FILE_OP_UNLINK: unlink or unlinkat (flags carry AT_REMOVEDIR for directories).</summary>
    Unlink = 4,

    /// <summary>FS_FILE_OP_RENAME: rename, renameat or renameat2.</summary>
    Rename = 5,
}

/// <summary>Mirror of <c>enum fs_file_status</c>: bits of <c>fs_file_record.status</c>.</summary>
[Flags]
internal enum FileStatus : ushort
{
    /// <summary>No flag.</summary>
    None = 0,

    /// <summary>FS_FILE_RESULT_UNKNOWN: the syscall's result could not be collected.</summary>
    ResultUnknown = 1,

    /// <summary>FS_FILE_PATH_TRUNCATED: the path was cut at 255 bytes.</summary>
    PathTruncated = 2,

    /// <summary>FS_FILE_NEW_PATH_TRUNCATED: the rename target was cut at 255 bytes.</summary>
    NewPathTruncated = 4,

    /// <summary>FS_FILE_UNNORMALIZED: a path has "//", "/./" or "/../": normalize, then check the prefixes again.</summary>
    Unnormalized = 8,

    /// <summary>FS_FILE_PATH_RESOLVED: the path was relative and was joined to its directory in the kernel.</summary>
    PathResolved = 16,

    /// <summary>FS_FILE_NEW_PATH_RESOLVED: as <see cref="PathResolved"/>, for the rename target.</summary>
    NewPathResolved = 32,

    /// <summary>FS_FILE_READ_LATE: a path was not readable at syscall entry and was read with the result.</summary>
    ReadLate = 64,
}

/// <summary>Mirror of <c>enum fs_file_counter</c>: indexes into the file object's <c>counters</c> map.</summary>
internal enum FileKernelCounter : uint
{
    /// <summary>FS_FILE_COUNTER_RINGBUF_RESERVE_FAILED: a record was lost, the ring buffer was full.</summary>
    RingBufferReserveFailed = 0,

    /// <summary>FS_FILE_COUNTER_PENDING_FULL: lost, no room to hold a call until its result.</summary>
    PendingFull = 1,

    /// <summary>FS_FILE_COUNTER_PENDING_REPLACED: lost, an earlier call of the thread never delivered its result.</summary>
    PendingReplaced = 2,

    /// <summary>FS_FILE_COUNTER_RESULT_UNKNOWN: sent without a result.</summary>
    ResultUnknown = 3,

    /// <summary>FS_FILE_COUNTER_RELATIVE_UNRESOLVED: a relative path whose directory could not be walked; not checked.</summary>
    RelativeUnresolved = 4,

    /// <summary>FS_FILE_COUNTER_PATH_UNREADABLE: a path unreadable even after the call; not checked.</summary>
    PathUnreadable = 5,
}

/// <summary>Mirror of <c>enum fs_file_watch</c>: values of the <c>watched_prefixes</c> LPM trie (bits).</summary>
[Flags]
internal enum FileWatch : uint
{
    /// <summary>FS_FILE_WATCH_IGNORE: an excluded prefix.</summary>
    Ignore = 0,

    /// <summary>FS_FILE_WATCH_READS: opens for reading are reported.</summary>
    Reads = 1,

    /// <summary>FS_FILE_WATCH_CHANGES: create, write, unlink and rename are reported.</summary>
    Changes = 2,

    /// <summary>FS_FILE_WATCH_REPORT: both.</summary>
    Report = 3,
}

/// <summary>Mirror of <c>struct fs_path_key</c> (260 bytes): the LPM trie key, prefix length in bits.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FsPathKey
{
    public const int PathLength = 256;

    public uint prefixlen;
    public fixed byte path[PathLength];
}

/// <summary>Mirror of <c>struct fs_file_record</c> (592 bytes, no implicit padding).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FsFileRecord
{
    public const int CommLength = 16;
    public const int PathLength = 256;

    public uint kind;
    public uint tgid;
    public uint pid;
    public uint euid;
    public ulong timestamp_ns;
    public ulong cgroup_id;
    public long result;
    public ulong flags;
    public uint mode;
    public uint syscall_nr;
    public ushort op;
    public ushort status;
    public uint reserved;
    public fixed byte comm[CommLength];
    public fixed byte path[PathLength];
    public fixed byte new_path[PathLength];
}

/// <summary>One decoded <c>fs_file_record</c>.</summary>
/// <param name="Tgid">Process id.</param>
/// <param name="Pid">Thread id.</param>
/// <param name="Euid">Effective uid.</param>
/// <param name="TimestampNs">Kernel monotonic time at syscall entry.</param>
/// <param name="CgroupId">cgroup v2 id.</param>
/// <param name="Result">The syscall's return value (fd or 0, or -errno); meaningless with <see cref="FileStatus.ResultUnknown"/>.</param>
/// <param name="Flags">Open flags, unlinkat or renameat2 flags.</param>
/// <param name="Mode">Create mode of opens.</param>
/// <param name="SyscallNr">The syscall's number.</param>
/// <param name="Op">What was done.</param>
/// <param name="Status">Flags about how the record was made.</param>
/// <param name="Comm">The process's name.</param>
/// <param name="Path">The path (absolute).</param>
/// <param name="NewPath">The rename target; empty otherwise.</param>
internal readonly record struct FileRecord(
    uint Tgid,
    uint Pid,
    uint Euid,
    ulong TimestampNs,
    ulong CgroupId,
    long Result,
    ulong Flags,
    uint Mode,
    uint SyscallNr,
    FileOp Op,
    FileStatus Status,
    string Comm,
    string Path,
    string NewPath);

/// <summary>
/// Turns raw samples of the file ring buffer into <see cref="FileRecord"/>. Never throws on bad
/// input: a sample that does not fit is reported as a <see cref="DecodeResult"/>.
/// </summary>
internal static class FileRecordDecoder
{
    /// <summary>Size of <c>struct fs_file_record</c>.</summary>
    public static readonly int RecordSize = Marshal.SizeOf<FsFileRecord>();

    /// <summary>Decodes <paramref name="data"/> (host byte order, as the kernel wrote it).</summary>
    public static unsafe DecodeResult TryDecode(ReadOnlySpan<byte> data, out FileRecord record)
    {
        record = default;
        if (data.Length < RecordSize)
        {
            return DecodeResult.TooShort;
        }
        FsFileRecord raw = MemoryMarshal.Read<FsFileRecord>(data);
        if ((FileRecordKind)raw.kind != FileRecordKind.File || raw.op is < (ushort)FileOp.Open or > (ushort)FileOp.Rename)
        {
            return DecodeResult.UnknownKind;
        }
        record = new FileRecord(
            raw.tgid, raw.pid, raw.euid, raw.timestamp_ns, raw.cgroup_id, raw.result, raw.flags, raw.mode,
            raw.syscall_nr, (FileOp)raw.op, (FileStatus)raw.status,
            ProcessRecordDecoder.CString(new ReadOnlySpan<byte>(raw.comm, FsFileRecord.CommLength)),
            ProcessRecordDecoder.CString(new ReadOnlySpan<byte>(raw.path, FsFileRecord.PathLength)),
            ProcessRecordDecoder.CString(new ReadOnlySpan<byte>(raw.new_path, FsFileRecord.PathLength)));
        return DecodeResult.Ok;
    }

    /// <summary>The event model's name of an operation: "open", "create", "write", "unlink", "rename".</summary>
    public static string OpName(FileOp op) => op switch
    {
        FileOp.Open => "open",
        FileOp.Create => "create",
        FileOp.Write => "write",
        FileOp.Unlink => "unlink",
        FileOp.Rename => "rename",
        _ => "unknown",
    };
}
