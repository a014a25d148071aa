using System.Buffers.Binary;
using System.Net;
using System.Text;

namespace FlowSec.Tests.Sensor;

/// <summary>
/// Builds an <c>fs_tcp_record</c> byte by byte at the offsets written out in bpf/flowsec.h,
/// independently of the C# mirror struct, so decoder tests do not trust the code they test.
/// </summary>
internal sealed class TcpRecordBytes
{
    public uint Kind = 2;
    public uint Tgid = 4242;
    public uint Pid = 4243;
    public ushort Family = 2;
    public byte OldState = 9;
    public byte NewState = 7;
    public ulong TimestampNs = 5_000_000_000;
    public ulong StartNs = 4_000_000_000;
    public ulong CgroupId = 77;
    public ulong SockId = 0xffff_8880_1234_5678;
    public IPAddress Local = IPAddress.Parse("10.1.2.3");
    public IPAddress Remote = IPAddress.Parse("10.9.8.7");
    public ushort LocalPort = 43210;
    public ushort RemotePort = 443;
    public byte Initiator = 1;
    public byte FirstState = 2;
    public ulong BytesAcked = 1234;
    public ulong BytesReceived = 56789;
    public uint SegsOut = 11;
    public uint SegsIn = 22;
    public uint SrttUs = 345;
    public uint TotalRetrans = 3;
    public string Comm = "curl";

    public byte[] ToBytes()
    {
        var b = new byte[136];
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(0), Kind);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), Tgid);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), Pid);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(12), Family);
        b[14] = OldState;
        b[15] = NewState;
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), TimestampNs);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), StartNs);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(32), CgroupId);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(40), SockId);
        Local.GetAddressBytes().CopyTo(b, 48);
        Remote.GetAddressBytes().CopyTo(b, 64);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(80), LocalPort);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(82), RemotePort);
        b[84] = Initiator;
        b[85] = FirstState;
        // 86: reserved, 0
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(88), BytesAcked);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(96), BytesReceived);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(104), SegsOut);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(108), SegsIn);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(112), SrttUs);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(116), TotalRetrans);
        Encoding.ASCII.GetBytes(Comm).AsSpan(0, Math.Min(Comm.Length, 16)).CopyTo(b.AsSpan(120));
        return b;
    }
}
