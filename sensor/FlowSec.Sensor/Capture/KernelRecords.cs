using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Capture;

// C# mirrors of bpf/flowsec.h, the single source of truth for kernel-to-user layouts.
// KernelLayoutTests compares these with the BTF of the compiled object, so edit both together.

/// <summary>Mirror of <c>enum fs_record_kind</c>: the first field of every record.</summary>
internal enum RecordKind : uint
{
    /// <summary>FS_RECORD_TCP_CLOSE: the connection reached CLOSE.</summary>
    TcpClose = 2,
}

/// <summary>Mirror of <c>enum fs_counter</c>: indexes into the per-CPU <c>counters</c> map.</summary>
internal enum KernelCounter : uint
{
    /// <summary>FS_COUNTER_RINGBUF_RESERVE_FAILED: a record was lost because the ring buffer was full.</summary>
    RingBufferReserveFailed = 0,

    /// <summary>FS_COUNTER_SOCKET_TABLE_FULL: a socket's owner could not be stored.</summary>
    SocketTableFull = 1,
}

/// <summary>The kernel's TCP states (include/net/tcp_states.h), as the tracepoint reports them.</summary>
internal enum TcpState : byte
{
    /// <summary>No state recorded (0 is not a kernel TCP state).</summary>
    Unknown = 0,
    /// <summary>TCP_ESTABLISHED.</summary>
    Established = 1,
    /// <summary>TCP_SYN_SENT.</summary>
    SynSent = 2,
    /// <summary>TCP_SYN_RECV.</summary>
    SynRecv = 3,
    /// <summary>TCP_FIN_WAIT1.</summary>
    FinWait1 = 4,
    /// <summary>TCP_FIN_WAIT2.</summary>
    FinWait2 = 5,
    /// <summary>TCP_TIME_WAIT.</summary>
    TimeWait = 6,
    /// <summary>TCP_CLOSE.</summary>
    Close = 7,
    /// <summary>TCP_CLOSE_WAIT.</summary>
    CloseWait = 8,
    /// <summary>TCP_LAST_ACK.</summary>
    LastAck = 9,
    /// <summary>TCP_LISTEN.</summary>
    Listen = 10,
    /// <summary>TCP_CLOSING.</summary>
    Closing = 11,
    /// <summary>TCP_NEW_SYN_RECV.</summary>
    NewSynRecv = 12,
    /// <summary>TCP_BOUND_INACTIVE (6.10+).</summary>
    BoundInactive = 13,
}

/// <summary>
/// Mirror of <c>struct fs_tcp_socket</c> (88 bytes, no implicit padding): the value of
/// tcp_lifecycle's <c>sockets</c> map, keyed by the socket's kernel address.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FsTcpSocket
{
    public ulong start_ns;
    public ulong cgroup_id;
    public uint tgid;
    public uint pid;
    public fixed byte saddr[16];
    public fixed byte daddr[16];
    public ushort family;
    public ushort sport;
    public ushort dport;
    public byte initiator;
    public byte first_state;
    public byte established;
    public fixed byte reserved[7];
    public fixed byte comm[FsTcpRecord.CommLength];
}

/// <summary>Mirror of <c>struct fs_tcp_record</c> (136 bytes, no implicit padding).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FsTcpRecord
{
    public const int CommLength = 16;

    public uint kind;
    public uint tgid;
    public uint pid;
    public ushort family;
    public byte old_state;
    public byte new_state;
    public ulong timestamp_ns;
    public ulong start_ns;
    public ulong cgroup_id;
    public ulong sock_id;
    public fixed byte saddr[16];
    public fixed byte daddr[16];
    public ushort sport;
    public ushort dport;
    public byte initiator;
    public byte first_state;
    public ushort reserved;
    public ulong bytes_acked;
    public ulong bytes_received;
    public uint segs_out;
    public uint segs_in;
    public uint srtt_us;
    public uint total_retrans;
    public fixed byte comm[CommLength];
}
