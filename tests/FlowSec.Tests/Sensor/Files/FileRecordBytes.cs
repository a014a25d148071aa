using System.Buffers.Binary;
using System.Text;

namespace FlowSec.Tests.Sensor.Files;

/// <summary>
/// Builds an <c>fs_file_record</c> byte by byte at the offsets written out in bpf/flowsec.h,
/// independently of the C# mirror struct.
/// </summary>
internal sealed class FileRecordBytes
{
    public uint Kind = 64;
    public uint Tgid = 5150;
    public uint Pid = 5151;
    public uint Euid = 1000;
    public ulong TimestampNs = 7_000_000_000;
    public ulong CgroupId = 99;
    public long Result = 3;
    public ulong Flags = 0x80000; // O_CLOEXEC
    public uint Mode;
    public uint SyscallNr = 257;
    public ushort Op = 1;
    public ushort Status;
    public string Comm = "cat";
    public string Path = "/etc/shadow";
    public string NewPath = "";

    public byte[] ToBytes()
    {
        var b = new byte[592];
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(0), Kind);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), Tgid);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), Pid);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(12), Euid);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), TimestampNs);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), CgroupId);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(32), Result);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(40), Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(48), Mode);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(52), SyscallNr);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(56), Op);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(58), Status);
        Encoding.ASCII.GetBytes(Comm).AsSpan(0, Math.Min(Comm.Length, 15)).CopyTo(b.AsSpan(64));
        Encoding.UTF8.GetBytes(Path).AsSpan(0, Math.Min(Path.Length, 255)).CopyTo(b.AsSpan(80));
        Encoding.UTF8.GetBytes(NewPath).AsSpan(0, Math.Min(NewPath.Length, 255)).CopyTo(b.AsSpan(336));
        return b;
    }
}
