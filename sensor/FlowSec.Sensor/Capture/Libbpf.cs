using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// P/Invoke into Debian's libbpf 1.x. libbpf 1.x reports errors by returning NULL (pointer
/// results, errno set) or a negative errno (int results); <see cref="Check(int, string)"/> and
/// <see cref="CheckPointer(nint, string)"/> turn both into <see cref="BpfException"/>.
/// </summary>
internal static unsafe partial class Libbpf
{
    private const string Lib = "libbpf.so.1";

    /// <summary>Subset of <c>struct bpf_object_open_opts</c>: libbpf accepts a shorter struct via <c>sz</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct ObjectOpenOpts
    {
        public nuint Size;
        public byte* ObjectName;
    }

    [LibraryImport(Lib, EntryPoint = "bpf_object__open_mem", SetLastError = true)]
    internal static partial nint ObjectOpenMem(void* buffer, nuint size, ObjectOpenOpts* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_object__load")]
    internal static partial int ObjectLoad(nint obj);

    [LibraryImport(Lib, EntryPoint = "bpf_object__close")]
    internal static partial void ObjectClose(nint obj);

    [LibraryImport(Lib, EntryPoint = "bpf_object__next_program")]
    internal static partial nint ObjectNextProgram(nint obj, nint prog);

    [LibraryImport(Lib, EntryPoint = "bpf_object__find_map_by_name")]
    internal static partial nint ObjectFindMapByName(nint obj, [MarshalAs(UnmanagedType.LPUTF8Str)] string name);

    [LibraryImport(Lib, EntryPoint = "bpf_program__name")]
    internal static partial byte* ProgramName(nint prog);

    [LibraryImport(Lib, EntryPoint = "bpf_program__section_name")]
    internal static partial byte* ProgramSectionName(nint prog);

    [LibraryImport(Lib, EntryPoint = "bpf_program__fd")]
    internal static partial int ProgramFd(nint prog);

    [LibraryImport(Lib, EntryPoint = "bpf_program__attach", SetLastError = true)]
    internal static partial nint ProgramAttach(nint prog);

    [LibraryImport(Lib, EntryPoint = "bpf_link__destroy")]
    internal static partial int LinkDestroy(nint link);

    [LibraryImport(Lib, EntryPoint = "bpf_map__fd")]
    internal static partial int MapFd(nint map);

    [LibraryImport(Lib, EntryPoint = "bpf_map_lookup_elem")]
    internal static partial int MapLookupElem(int fd, void* key, void* value);

    [LibraryImport(Lib, EntryPoint = "bpf_obj_get_info_by_fd")]
    internal static partial int ObjGetInfoByFd(int fd, void* info, uint* infoLength);

    /// <summary>A new fd for the loaded program with kernel id <paramref name="id"/>; -ENOENT once the kernel has freed it.</summary>
    [LibraryImport(Lib, EntryPoint = "bpf_prog_get_fd_by_id")]
    internal static partial int ProgramFdById(uint id);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__new", SetLastError = true)]
    internal static partial nint RingBufferNew(
        int mapFd, delegate* unmanaged[Cdecl]<void*, void*, nuint, int> sampleCallback, nint ctx, void* opts);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__poll")]
    internal static partial int RingBufferPoll(nint rb, int timeoutMs);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__consume")]
    internal static partial int RingBufferConsume(nint rb);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__free")]
    internal static partial void RingBufferFree(nint rb);

    /// <summary>1 when programs of <paramref name="progType"/> may call helper <paramref name="helperId"/>, 0 when not, <c>-errno</c> when the probe failed.</summary>
    [LibraryImport(Lib, EntryPoint = "libbpf_probe_bpf_helper")]
    internal static partial int ProbeHelper(int progType, int helperId, nint opts);

    [LibraryImport(Lib, EntryPoint = "libbpf_num_possible_cpus")]
    internal static partial int NumPossibleCpus();

    [LibraryImport(Lib, EntryPoint = "libbpf_strerror")]
    private static partial int StrError(int err, byte* buffer, nuint size);

    /// <summary>Text for an errno, including libbpf's own codes (4000+, e.g. "BPF object format invalid").</summary>
    internal static string ErrorText(int errno)
    {
        byte* buffer = stackalloc byte[256];
        return StrError(errno, buffer, 256) == 0 ? ReadString(buffer)! : Marshal.GetPInvokeErrorMessage(errno);
    }

    [LibraryImport(Lib, EntryPoint = "libbpf_set_print")]
    private static partial nint SetPrint(delegate* unmanaged[Cdecl]<int, byte*, nint, int> fn);

    /// <summary>Returns memory glibc holds after frees to the kernel (malloc_trim).</summary>
    public static void ReleaseFreedMemory() => MallocTrim(0);

    [LibraryImport("libc.so.6", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);

    [LibraryImport("libc.so.6", EntryPoint = "vsnprintf")]
    private static partial int VsnPrintf(byte* buffer, nuint size, byte* format, nint args);

    /// <summary>Reads a NUL-terminated string owned by libbpf.</summary>
    internal static string? ReadString(byte* s) => s == null ? null : Marshal.PtrToStringUTF8((nint)s);

    /// <summary>Throws for a negative libbpf result (which is <c>-errno</c>), else returns it.</summary>
    internal static int Check(int result, string what)
    {
        if (result < 0)
        {
            throw new BpfException(what, -result);
        }
        return result;
    }

    /// <summary>Throws for a NULL libbpf result, using the errno libbpf set.</summary>
    internal static nint CheckPointer(nint result, string what)
    {
        if (result == 0)
        {
            throw new BpfException(what, Marshal.GetLastPInvokeError());
        }
        return result;
    }

    private static ILogger? s_logger;
    private static int s_printInstalled;

    // libbpf prints on the thread that called it, so a load can collect its own warnings.
    [ThreadStatic]
    private static List<string>? t_warnings;

    /// <summary>While set, libbpf warnings on this thread are also appended here (to explain a failed load).</summary>
    internal static List<string>? CapturedWarnings
    {
        get => t_warnings;
        set => t_warnings = value;
    }

    /// <summary>
    /// Routes libbpf's own messages (including verifier logs of a failed load) to
    /// <paramref name="logger"/>. Process-wide, as libbpf's print hook is.
    /// </summary>
    internal static void SetLogger(ILogger logger)
    {
        Volatile.Write(ref s_logger, logger);
        if (Interlocked.Exchange(ref s_printInstalled, 1) == 0)
        {
            SetPrint(&OnPrint);
        }
    }

    // libbpf_print_level: LIBBPF_WARN = 0, LIBBPF_INFO = 1, LIBBPF_DEBUG = 2.
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnPrint(int level, byte* format, nint args)
    {
        try
        {
            var logger = Volatile.Read(ref s_logger);
            var logLevel = level switch
            {
                0 => LogLevel.Warning,
                1 => LogLevel.Information,
                _ => LogLevel.Debug,
            };
            bool log = logger is not null && logger.IsEnabled(logLevel);
            List<string>? warnings = level == 0 ? t_warnings : null;
            if (!log && warnings is null)
            {
                return 0;
            }
            string message = Format(format, args).TrimEnd('\n');
            warnings?.Add(message);
            if (log)
            {
                logger!.Log(logLevel, "{Message}", message);
            }
        }
        catch
        {
            // An exception must not unwind into libbpf's C frames.
        }
        return 0;
    }

    /// <summary>
    /// Formats a printf-style message with its va_list. On x86_64 and arm64 a va_list parameter
    /// arrives as a pointer to the va_list state; copying that state (what va_copy does there)
    /// lets us measure first and then format, so long verifier logs are not truncated.
    /// </summary>
    private static string Format(byte* format, nint args)
    {
        int stateSize = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 24,
            Architecture.Arm64 => 32,
            _ => 0,
        };
        if (stateSize == 0)
        {
            return ReadString(format) ?? "";
        }
        byte* copy = stackalloc byte[32];
        Buffer.MemoryCopy((void*)args, copy, 32, stateSize);
        int length = VsnPrintf(null, 0, format, (nint)copy);
        if (length <= 0)
        {
            return ReadString(format) ?? "";
        }
        byte[] buffer = new byte[length + 1];
        fixed (byte* b = buffer)
        {
            VsnPrintf(b, (nuint)buffer.Length, format, args);
        }
        return System.Text.Encoding.UTF8.GetString(buffer, 0, length);
    }
}

/// <summary>A libbpf call failed; carries the errno and its text.</summary>
internal sealed class BpfException : Exception
{
    /// <summary>Creates the exception for <paramref name="what"/> failing with <paramref name="errno"/>.</summary>
    public BpfException(string what, int errno)
        : base($"{what}: {Libbpf.ErrorText(errno)} (errno {errno})")
    {
        Errno = errno;
    }

    /// <summary>The errno libbpf reported.</summary>
    public int Errno { get; }
}
