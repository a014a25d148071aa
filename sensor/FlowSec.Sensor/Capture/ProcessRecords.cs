using System.Runtime.InteropServices;
using System.Text;

namespace FlowSec.Sensor.Capture;

// C# mirrors of the process section of bpf/flowsec.h, the single source of truth for
// kernel-to-user layouts. ProcessLayoutTests compares them with the BTF of the compiled object.

/// <summary>Mirror of <c>enum fs_process_record_kind</c>.</summary>
internal enum ProcessRecordKind : uint
{
    /// <summary>FS_RECORD_EXEC: a successful execve.</summary>
    Exec = 48,

    /// <summary>FS_RECORD_EXIT: the last thread of a process exited.</summary>
    Exit = 49,
}

/// <summary>Mirror of <c>enum fs_process_counter</c>: indexes into the process object's <c>counters</c> map.</summary>
internal enum ProcessKernelCounter : uint
{
    /// <summary>FS_PROCESS_COUNTER_RINGBUF_RESERVE_FAILED: a record was lost, the ring buffer was full.</summary>
    RingBufferReserveFailed = 0,

    /// <summary>FS_PROCESS_COUNTER_ARGS_UNREADABLE: an exec record was sent without arguments.</summary>
    ArgsUnreadable = 1,
}

/// <summary>Mirror of <c>struct fs_exec_record</c> (1352 bytes, no implicit padding).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FsExecRecord
{
    public const int CommLength = 16;
    public const int ExeLength = 256;
    public const int ArgsLength = 1024;

    public uint kind;
    public uint tgid;
    public uint ppid;
    public uint uid;
    public uint euid;
    public uint argc;
    public ulong timestamp_ns;
    public ulong start_ns;
    public ulong cgroup_id;
    public uint args_size;
    public ushort args_len;
    public ushort exe_len;
    public fixed byte comm[CommLength];
    public fixed byte exe[ExeLength];
    public fixed byte args[ArgsLength];
}

/// <summary>Mirror of <c>struct fs_exit_record</c> (64 bytes, no implicit padding).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FsExitRecord
{
    public const int CommLength = 16;

    public uint kind;
    public uint tgid;
    public uint ppid;
    public uint euid;
    public int exit_code;
    public uint reserved;
    public ulong timestamp_ns;
    public ulong start_ns;
    public ulong cgroup_id;
    public fixed byte comm[CommLength];
}

/// <summary>One decoded <c>fs_exec_record</c>.</summary>
/// <param name="Tgid">Process id.</param>
/// <param name="Ppid">Parent's process id.</param>
/// <param name="Uid">Real uid after exec.</param>
/// <param name="Euid">Effective uid after exec.</param>
/// <param name="Argc">Argument count execve received (may exceed <paramref name="Args"/>).</param>
/// <param name="TimestampNs">Kernel monotonic time of the exec.</param>
/// <param name="StartNs">Kernel monotonic time the task was forked.</param>
/// <param name="CgroupId">cgroup v2 id.</param>
/// <param name="Comm">Process name after exec.</param>
/// <param name="Exe">The filename execve was given.</param>
/// <param name="Args">The first arguments (at most <see cref="ProcessRecordDecoder.MaxArgs"/>, from the first 1 KiB).</param>
/// <param name="ArgsTruncated">True when arguments were left out or cut.</param>
internal readonly record struct ExecRecord(
    uint Tgid,
    uint Ppid,
    uint Uid,
    uint Euid,
    uint Argc,
    ulong TimestampNs,
    ulong StartNs,
    ulong CgroupId,
    string Comm,
    string Exe,
    IReadOnlyList<string> Args,
    bool ArgsTruncated);

/// <summary>One decoded <c>fs_exit_record</c>.</summary>
/// <param name="Tgid">Process id.</param>
/// <param name="Ppid">Parent's process id at exit.</param>
/// <param name="Euid">Effective uid.</param>
/// <param name="WaitStatus">The kernel's exit code: status &lt;&lt; 8, or the terminating signal.</param>
/// <param name="TimestampNs">Kernel monotonic time of the exit.</param>
/// <param name="StartNs">Kernel monotonic time the process was forked.</param>
/// <param name="CgroupId">cgroup v2 id.</param>
/// <param name="Comm">The thread group leader's name.</param>
internal readonly record struct ExitRecord(
    uint Tgid,
    uint Ppid,
    uint Euid,
    int WaitStatus,
    ulong TimestampNs,
    ulong StartNs,
    ulong CgroupId,
    string Comm)
{
    /// <summary>
    /// The exit status (0–255) of a process that exited, or minus the signal number of one a
    /// signal killed (as .NET and Python report it): -9 for SIGKILL.
    /// </summary>
    public int ExitCode => (WaitStatus & 0x7f) == 0 ? (WaitStatus >> 8) & 0xff : -(WaitStatus & 0x7f);

    /// <summary>True when a signal killed the process and it dumped core.</summary>
    public bool CoreDumped => (WaitStatus & 0x7f) != 0 && (WaitStatus & 0x80) != 0;

    /// <summary>How long the process lived, from fork to exit; 0 when the start is not known.</summary>
    public ulong LifetimeNs => StartNs != 0 && TimestampNs > StartNs ? TimestampNs - StartNs : 0;
}

/// <summary>
/// Turns raw samples of the process ring buffer into <see cref="ExecRecord"/> and
/// <see cref="ExitRecord"/>. Never throws on bad input: a sample that does not fit is reported
/// as a <see cref="DecodeResult"/> for the caller to count.
/// </summary>
internal static class ProcessRecordDecoder
{
    /// <summary>Arguments kept per exec: the rest is cut (and flagged).</summary>
    public const int MaxArgs = 16;

    /// <summary>Size of <c>struct fs_exec_record</c>.</summary>
    public static readonly int ExecRecordSize = Marshal.SizeOf<FsExecRecord>();

    /// <summary>Size of <c>struct fs_exit_record</c>.</summary>
    public static readonly int ExitRecordSize = Marshal.SizeOf<FsExitRecord>();

    /// <summary>The kind field every record starts with; null when the sample is shorter than it.</summary>
    public static ProcessRecordKind? PeekKind(ReadOnlySpan<byte> data) =>
        data.Length < 4 ? null : (ProcessRecordKind)MemoryMarshal.Read<uint>(data);

    /// <summary>Decodes an exec record (host byte order, as the kernel wrote it).</summary>
    public static unsafe DecodeResult TryDecodeExec(ReadOnlySpan<byte> data, out ExecRecord record)
    {
        record = default;
        if (data.Length < ExecRecordSize)
        {
            return DecodeResult.TooShort;
        }
        FsExecRecord raw = MemoryMarshal.Read<FsExecRecord>(data);
        if ((ProcessRecordKind)raw.kind != ProcessRecordKind.Exec)
        {
            return DecodeResult.UnknownKind;
        }
        int argsLength = Math.Min((int)raw.args_len, FsExecRecord.ArgsLength);
        var args = SplitArgs(new ReadOnlySpan<byte>(raw.args, argsLength), MaxArgs, out bool cut);
        bool truncated = cut || raw.args_size > argsLength || raw.argc > args.Count;
        record = new ExecRecord(
            raw.tgid, raw.ppid, raw.uid, raw.euid, raw.argc, raw.timestamp_ns, raw.start_ns, raw.cgroup_id,
            CString(new ReadOnlySpan<byte>(raw.comm, FsExecRecord.CommLength)),
            CString(new ReadOnlySpan<byte>(raw.exe, FsExecRecord.ExeLength)),
            args, truncated);
        return DecodeResult.Ok;
    }

    /// <summary>Decodes an exit record (host byte order, as the kernel wrote it).</summary>
    public static unsafe DecodeResult TryDecodeExit(ReadOnlySpan<byte> data, out ExitRecord record)
    {
        record = default;
        if (data.Length < ExitRecordSize)
        {
            return DecodeResult.TooShort;
        }
        FsExitRecord raw = MemoryMarshal.Read<FsExitRecord>(data);
        if ((ProcessRecordKind)raw.kind != ProcessRecordKind.Exit)
        {
            return DecodeResult.UnknownKind;
        }
        record = new ExitRecord(
            raw.tgid, raw.ppid, raw.euid, raw.exit_code, raw.timestamp_ns, raw.start_ns, raw.cgroup_id,
            CString(new ReadOnlySpan<byte>(raw.comm, FsExitRecord.CommLength)));
        return DecodeResult.Ok;
    }

    /// <summary>
    /// Splits a NUL-separated argument area into at most <paramref name="max"/> strings.
    /// <paramref name="cut"/> is set when arguments were left out, or the last one has no NUL
    /// (the copy ended inside it).
    /// </summary>
    public static IReadOnlyList<string> SplitArgs(ReadOnlySpan<byte> area, int max, out bool cut)
    {
        var args = new List<string>();
        cut = false;
        while (!area.IsEmpty)
        {
            if (args.Count == max)
            {
                cut = true;
                break;
            }
            int nul = area.IndexOf((byte)0);
            if (nul < 0)
            {
                args.Add(Encoding.UTF8.GetString(area));
                cut = true;
                break;
            }
            args.Add(Encoding.UTF8.GetString(area[..nul]));
            area = area[(nul + 1)..];
        }
        return args;
    }

    /// <summary>A NUL-terminated UTF-8 string in a fixed buffer (the whole buffer when it has no NUL).</summary>
    internal static string CString(ReadOnlySpan<byte> buffer)
    {
        int nul = buffer.IndexOf((byte)0);
        return Encoding.UTF8.GetString(nul >= 0 ? buffer[..nul] : buffer);
    }
}
