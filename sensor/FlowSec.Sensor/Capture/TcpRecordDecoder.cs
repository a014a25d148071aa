using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Capture;

/// <summary>One decoded <c>fs_tcp_record</c>, from the local socket's point of view.</summary>
internal readonly record struct TcpRecord(
    RecordKind Kind,
    uint Tgid,
    uint Pid,
    AddressFamily Family,
    TcpState OldState,
    TcpState NewState,
    ulong TimestampNs,
    ulong StartNs,
    ulong CgroupId,
    ulong SockId,
    IPAddress LocalAddress,
    IPAddress RemoteAddress,
    ushort LocalPort,
    ushort RemotePort,
    bool Initiator,
    TcpState FirstState,
    ulong BytesAcked,
    ulong BytesReceived,
    uint SegsOut,
    uint SegsIn,
    uint SrttUs,
    uint TotalRetrans,
    string Comm);

/// <summary>Why a ring-buffer sample was not decoded.</summary>
internal enum DecodeResult
{
    /// <summary>Decoded.</summary>
    Ok,
    /// <summary>Shorter than <c>struct fs_tcp_record</c>.</summary>
    TooShort,
    /// <summary>Kind is not a TCP record kind.</summary>
    UnknownKind,
    /// <summary>Family is neither AF_INET nor AF_INET6.</summary>
    UnknownFamily,
}

/// <summary>
/// Turns raw ring-buffer samples into <see cref="TcpRecord"/>. Never throws on bad input: a
/// sample that does not fit is reported as a <see cref="DecodeResult"/> for the caller to count.
/// </summary>
internal static class TcpRecordDecoder
{
    private const ushort AfInet = 2;
    private const ushort AfInet6 = 10;

    /// <summary>Size of <c>struct fs_tcp_record</c>.</summary>
    public static readonly int RecordSize = Marshal.SizeOf<FsTcpRecord>();

    /// <summary>Decodes <paramref name="data"/> (host byte order, as the kernel wrote it).</summary>
    public static unsafe DecodeResult TryDecode(ReadOnlySpan<byte> data, out TcpRecord record)
    {
        record = default;
        if (data.Length < RecordSize)
        {
            return DecodeResult.TooShort;
        }
        FsTcpRecord raw = MemoryMarshal.Read<FsTcpRecord>(data);
        var kind = (RecordKind)raw.kind;
        if (kind is not (RecordKind.TcpOpen or RecordKind.TcpClose))
        {
            return DecodeResult.UnknownKind;
        }
        IPAddress local, remote;
        AddressFamily family;
        switch (raw.family)
        {
            case AfInet:
                family = AddressFamily.InterNetwork;
                local = new IPAddress(new ReadOnlySpan<byte>(raw.saddr, 4));
                remote = new IPAddress(new ReadOnlySpan<byte>(raw.daddr, 4));
                break;
            case AfInet6:
                family = AddressFamily.InterNetworkV6;
                local = new IPAddress(new ReadOnlySpan<byte>(raw.saddr, 16));
                remote = new IPAddress(new ReadOnlySpan<byte>(raw.daddr, 16));
                break;
            default:
                return DecodeResult.UnknownFamily;
        }
        record = new TcpRecord(
            kind, raw.tgid, raw.pid, family, (TcpState)raw.old_state, (TcpState)raw.new_state,
            raw.timestamp_ns, raw.start_ns, raw.cgroup_id, raw.sock_id, local, remote,
            raw.sport, raw.dport, raw.initiator != 0, (TcpState)raw.first_state,
            raw.bytes_acked, raw.bytes_received, raw.segs_out, raw.segs_in, raw.srtt_us, raw.total_retrans,
            CommNames.Get(new ReadOnlySpan<byte>(raw.comm, FsTcpRecord.CommLength)));
        return DecodeResult.Ok;
    }
}
