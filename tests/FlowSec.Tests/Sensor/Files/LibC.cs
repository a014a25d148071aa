using System.Runtime.InteropServices;

namespace FlowSec.Tests.Sensor.Files;

/// <summary>The syscalls the file tests make, exactly as named (no .NET layer adding flags or retries).</summary>
internal static partial class LibC
{
    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_CREAT = 0x40;
    public const int O_DIRECTORY = 0x10000;
    public const int AT_FDCWD = -100;

    [LibraryImport("libc.so.6", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenRaw(string path, int flags, int mode);

    [LibraryImport("libc.so.6", EntryPoint = "openat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenAtRaw(int dirfd, string path, int flags, int mode);

    [LibraryImport("libc.so.6", EntryPoint = "unlink", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int UnlinkRaw(string path);

    [LibraryImport("libc.so.6", EntryPoint = "rename", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int RenameRaw(string from, string to);

    [LibraryImport("libc.so.6", EntryPoint = "open", SetLastError = true)]
    private static unsafe partial int OpenPointerRaw(byte* path, int flags, int mode);

    [LibraryImport("libc.so.6", EntryPoint = "mmap", SetLastError = true)]
    private static unsafe partial void* MmapRaw(void* address, nuint length, int protection, int flags, int fd, long offset);

    [LibraryImport("libc.so.6", EntryPoint = "munmap")]
    public static unsafe partial int Munmap(void* address, nuint length);

    [LibraryImport("libc.so.6", EntryPoint = "close")]
    public static partial int Close(int fd);

    /// <summary>open(2) of a path at a raw address (which may be unmapped, or mapped but never touched).</summary>
    public static unsafe int OpenPointer(byte* path, int flags)
    {
        int fd = Result(OpenPointerRaw(path, flags, 0));
        if (fd >= 0)
        {
            Close(fd);
        }
        return fd;
    }

    /// <summary>
    /// Maps <paramref name="file"/> read-only without touching it: its page is not in this
    /// process's page tables until something reads it (the kernel's own getname, here).
    /// </summary>
    public static unsafe byte* MapUntouched(string file, nuint length)
    {
        int fd = Open(file, O_RDONLY);
        if (fd < 0)
        {
            throw new IOException($"open {file}: {fd}");
        }
        void* address = MmapRaw(null, length, 1 /* PROT_READ */, 2 /* MAP_PRIVATE */, fd, 0);
        Close(fd);
        if ((nint)address == -1)
        {
            throw new IOException($"mmap {file}: {Marshal.GetLastPInvokeError()}");
        }
        return (byte*)address;
    }

    /// <summary>open(2); returns the fd, or -errno (what the kernel returned).</summary>
    public static int Open(string path, int flags, int mode = 0) => Result(OpenRaw(path, flags, mode));

    /// <summary>openat(2); returns the fd, or -errno.</summary>
    public static int OpenAt(int dirfd, string path, int flags, int mode = 0) => Result(OpenAtRaw(dirfd, path, flags, mode));

    /// <summary>unlink(2) (glibc: unlinkat); returns 0 or -errno.</summary>
    public static int Unlink(string path) => Result(UnlinkRaw(path));

    /// <summary>rename(2) (glibc: renameat2 or renameat); returns 0 or -errno.</summary>
    public static int Rename(string from, string to) => Result(RenameRaw(from, to));

    /// <summary>Opens and closes <paramref name="path"/>; returns open's result.</summary>
    public static int OpenClose(string path, int flags, int mode = 0)
    {
        int fd = Open(path, flags, mode);
        if (fd >= 0)
        {
            Close(fd);
        }
        return fd;
    }

    private static int Result(int r) => r >= 0 ? r : -Marshal.GetLastPInvokeError();
}
