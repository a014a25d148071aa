using System.Buffers.Binary;
using System.Text;

namespace FlowSec.Tests.Sensor.Processes;

/// <summary>
/// Builds <c>fs_exec_record</c> and <c>fs_exit_record</c> byte by byte at the offsets written out
/// in bpf/flowsec.h, independently of the C# mirror structs.
/// </summary>
internal static class ProcessRecordBytes
{
    public static byte[] Exec(
        uint tgid = 4242, uint ppid = 1, uint uid = 1000, uint euid = 0, uint? argc = null,
        ulong timestampNs = 9_000_000_000, ulong startNs = 8_000_000_000, ulong cgroupId = 77,
        string comm = "sudo", string exe = "/usr/bin/sudo", string[]? args = null,
        uint? argsSize = null, int? argsLen = null, uint kind = 48)
    {
        args ??= ["sudo", "-i"];
        byte[] area = Encoding.UTF8.GetBytes(string.Concat(args.Select(a => a + "\0")));
        int copied = Math.Min(area.Length, 1024);
        var b = new byte[1352];
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(0), kind);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), tgid);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), ppid);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(12), uid);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), euid);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(20), argc ?? (uint)args.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), timestampNs);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(32), startNs);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(40), cgroupId);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(48), argsSize ?? (uint)area.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(52), (ushort)(argsLen ?? copied));
        byte[] exeBytes = Encoding.UTF8.GetBytes(exe);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(54), (ushort)Math.Min(exeBytes.Length + 1, 256));
        Encoding.ASCII.GetBytes(comm).AsSpan(0, Math.Min(comm.Length, 15)).CopyTo(b.AsSpan(56));
        exeBytes.AsSpan(0, Math.Min(exeBytes.Length, 255)).CopyTo(b.AsSpan(72));
        area.AsSpan(0, copied).CopyTo(b.AsSpan(328));
        return b;
    }

    public static byte[] Exit(
        uint tgid = 4242, uint ppid = 1, uint euid = 0, int exitCode = 0,
        ulong timestampNs = 9_500_000_000, ulong startNs = 8_000_000_000, ulong cgroupId = 77, string comm = "sudo", uint kind = 49)
    {
        var b = new byte[64];
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(0), kind);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), tgid);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), ppid);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(12), euid);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(16), exitCode);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), timestampNs);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(32), startNs);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(40), cgroupId);
        Encoding.ASCII.GetBytes(comm).AsSpan(0, Math.Min(comm.Length, 15)).CopyTo(b.AsSpan(48));
        return b;
    }
}
