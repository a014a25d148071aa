using System.Net;
using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Capture;

// C# mirrors of the UDP flow and drop layouts in bpf/flowsec.h, the single source of truth.
// UdpDropLayoutTests compares them with the BTF of the compiled objects, so edit both together.

/// <summary>Mirror of <c>enum fs_flow_dir</c>: which way a packet went, seen from this host.</summary>
internal enum FlowDir : byte
{
    /// <summary>FS_FLOW_DIR_EGRESS: sent by a local socket (for drops: generated here).</summary>
    Egress = 1,

    /// <summary>FS_FLOW_DIR_INGRESS: received from a device.</summary>
    Ingress = 2,
}

/// <summary>Mirror of <c>enum fs_udp_counter</c>: indexes into the per-CPU <c>udp_counters</c> map.</summary>
internal enum UdpCounter : uint
{
    /// <summary>FS_UDP_COUNTER_INSERTS: flow entries created.</summary>
    Inserts = 0,

    /// <summary>FS_UDP_COUNTER_INSERT_FAILED: a packet's flow could be neither created nor found.</summary>
    InsertFailed = 1,

    /// <summary>FS_UDP_COUNTER_UNPARSED: UDP packets whose ports could not be read.</summary>
    Unparsed = 2,
}

/// <summary>Mirror of <c>struct fs_udp_flow_key</c> (48 bytes, no implicit padding).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FsUdpFlowKey : IEquatable<FsUdpFlowKey>
{
    public ulong cgroup_id;
    public fixed byte local_addr[16];
    public fixed byte remote_addr[16];
    public ushort local_port;
    public ushort remote_port;
    public byte family;
    public byte protocol;
    public ushort reserved;

    /// <summary>The local address (4 bytes for AF_INET, 16 for AF_INET6).</summary>
    public readonly IPAddress LocalAddress => KernelAddress.From(family, MemoryMarshal.CreateReadOnlySpan(in local_addr[0], 16));

    /// <summary>The remote address.</summary>
    public readonly IPAddress RemoteAddress => KernelAddress.From(family, MemoryMarshal.CreateReadOnlySpan(in remote_addr[0], 16));

    /// <summary>Byte-wise equality: the key is plain data with explicit padding.</summary>
    public readonly bool Equals(FsUdpFlowKey other) => Bytes(in this).SequenceEqual(Bytes(in other));

    /// <inheritdoc />
    public override readonly bool Equals(object? obj) => obj is FsUdpFlowKey other && Equals(other);

    /// <inheritdoc />
    public override readonly int GetHashCode()
    {
        var hash = new HashCode();
        hash.AddBytes(Bytes(in this));
        return hash.ToHashCode();
    }

    private static ReadOnlySpan<byte> Bytes(in FsUdpFlowKey key) =>
        MemoryMarshal.AsBytes(new ReadOnlySpan<FsUdpFlowKey>(in key));
}

/// <summary>Mirror of <c>struct fs_udp_flow_stats</c> (56 bytes, no implicit padding).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FsUdpFlowStats
{
    public ulong first_ns;
    public ulong last_ns;
    public ulong bytes_egress;
    public ulong bytes_ingress;
    public ulong packets_egress;
    public ulong packets_ingress;
    public byte first_dir;
    public fixed byte reserved[7];
}

/// <summary>Addresses as the BPF programs store them: 16 bytes, IPv4 in the first 4.</summary>
internal static class KernelAddress
{
    /// <summary>AF_INET.</summary>
    public const byte AfInet = 2;

    /// <summary>AF_INET6.</summary>
    public const byte AfInet6 = 10;

    /// <summary>The address of <paramref name="family"/> in <paramref name="bytes"/> (16 bytes).</summary>
    public static IPAddress From(byte family, ReadOnlySpan<byte> bytes) =>
        new(family == AfInet ? bytes[..4] : bytes[..16]);
}
