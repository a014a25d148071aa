using System.Net;
using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Capture;

// C# mirrors of the drop layouts in bpf/flowsec.h (see UdpRecords.cs for the shared pieces).

/// <summary>Mirror of <c>enum fs_drop_counter</c>: indexes into the per-CPU <c>drop_counters</c> map.</summary>
internal enum DropCounter : uint
{
    /// <summary>FS_DROP_COUNTER_SEEN: kfree_skb calls with a real drop reason (not payload-less TCP segments purged at socket teardown).</summary>
    Seen = 0,

    /// <summary>FS_DROP_COUNTER_INSERTS: aggregate entries created.</summary>
    Inserts = 1,

    /// <summary>FS_DROP_COUNTER_INSERT_FAILED: a drop could be neither aggregated nor found.</summary>
    InsertFailed = 2,

    /// <summary>FS_DROP_COUNTER_NON_IP: drops without an IPv4/IPv6 header (counted only).</summary>
    NonIp = 3,
}

/// <summary>Mirror of <c>struct fs_drop_key</c> (56 bytes, no implicit padding).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FsDropKey
{
    public ulong cgroup_id;
    public fixed byte saddr[16];
    public fixed byte daddr[16];
    public ushort sport;
    public ushort dport;
    public uint reason;
    public uint netns;
    public byte family;
    public byte protocol;
    public byte direction;
    public byte reserved;

    /// <summary>The packet's source address.</summary>
    public readonly IPAddress SourceAddress => KernelAddress.From(family, MemoryMarshal.CreateReadOnlySpan(in saddr[0], 16));

    /// <summary>The packet's destination address.</summary>
    public readonly IPAddress DestinationAddress => KernelAddress.From(family, MemoryMarshal.CreateReadOnlySpan(in daddr[0], 16));
}

/// <summary>Mirror of <c>struct fs_drop_stats</c> (48 bytes, no implicit padding).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FsDropStats
{
    public ulong first_ns;
    public ulong last_ns;
    public ulong packets;
    public ulong bytes;
    public ulong location;
    public uint ifindex;
    public uint reserved;
}
