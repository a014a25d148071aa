using System.Buffers.Binary;
using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor;

/// <summary>
/// Builds an <c>fs_tcp_socket</c> (the kernel's socket-table entry) byte by byte at the offsets
/// written out in bpf/flowsec.h, independently of the C# mirror struct, which reads it back as the
/// map reader would hand it over.
/// </summary>
internal sealed class TcpSocketBytes
{
    public const int Size = 88;

    public ulong StartNs = 4_000_000_000;
    public ulong CgroupId = 77;
    public uint Tgid = 4242;
    public uint Pid = 4243;
    public IPAddress Local = IPAddress.Parse("10.1.2.3");
    public IPAddress Remote = IPAddress.Parse("10.9.8.7");
    public ushort Family = 2;
    public ushort LocalPort = 43210;
    public ushort RemotePort = 443;
    public byte Initiator = 1;
    public byte FirstState = 2;
    public byte Established = 1;
    public string Comm = "curl";

    public byte[] ToBytes()
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(0), StartNs);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), CgroupId);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), Tgid);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(20), Pid);
        Local.GetAddressBytes().CopyTo(b, 24);
        Remote.GetAddressBytes().CopyTo(b, 40);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(56), Family);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(58), LocalPort);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(60), RemotePort);
        b[62] = Initiator;
        b[63] = FirstState;
        b[64] = Established;
        // 65..71: reserved, 0
        Encoding.ASCII.GetBytes(Comm).AsSpan(0, Math.Min(Comm.Length, 16)).CopyTo(b.AsSpan(72));
        return b;
    }

    public FsTcpSocket ToSocket() => MemoryMarshal.Read<FsTcpSocket>(ToBytes());
}
