using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// One TCP socket as the kernel reports it, from the local socket's point of view: its close
/// record (<c>fs_tcp_record</c>), or, while the connection is open, its socket-table entry
/// (<c>fs_tcp_socket</c>: both states ESTABLISHED, counters 0).
/// </summary>
internal readonly record struct TcpRecord(
    uint Tgid,
    uint Pid,
    AddressFamily Family,
    TcpState OldState,
    TcpState NewState,
    ulong TimestampNs,
    ulong StartNs,
    ulong CgroupId,
    ulong SockId,
    IpAddress16 LocalAddress,
    IpAddress16 RemoteAddress,
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

/// <summary>Why a ring-buffer sample or socket-table entry was not decoded.</summary>
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
    /// <summary>A socket-table entry whose connection has not reached ESTABLISHED: no tuple yet.</summary>
    NotEstablished,
}

/// <summary>
/// Turns raw ring-buffer samples and socket-table entries into <see cref="TcpRecord"/>. Never
/// throws on bad input: what does not fit is reported as a <see cref="DecodeResult"/> for the
/// caller to count.
/// </summary>
internal static class TcpRecordDecoder
{
    private const ushort AfInet = 2;
    private const ushort AfInet6 = 10;

    /// <summary>Size of <c>struct fs_tcp_record</c>.</summary>
    public static readonly int RecordSize = Marshal.SizeOf<FsTcpRecord>();

    /// <summary>Size of <c>struct fs_tcp_socket</c>, the <c>sockets</c> map's value.</summary>
    public static readonly int SocketSize = Marshal.SizeOf<FsTcpSocket>();

    /// <summary>Decodes a close record <paramref name="data"/> (host byte order, as the kernel wrote it).</summary>
    public static unsafe DecodeResult TryDecode(ReadOnlySpan<byte> data, out TcpRecord record)
    {
        record = default;
        if (data.Length < RecordSize)
        {
            return DecodeResult.TooShort;
        }
        FsTcpRecord raw = MemoryMarshal.Read<FsTcpRecord>(data);
        if ((RecordKind)raw.kind != RecordKind.TcpClose)
        {
            return DecodeResult.UnknownKind;
        }
        if (!TryAddresses(raw.family, raw.saddr, raw.daddr, out var family, out var local, out var remote))
        {
            return DecodeResult.UnknownFamily;
        }
        record = new TcpRecord(
            raw.tgid, raw.pid, family, (TcpState)raw.old_state, (TcpState)raw.new_state,
            raw.timestamp_ns, raw.start_ns, raw.cgroup_id, raw.sock_id, local, remote,
            raw.sport, raw.dport, raw.initiator != 0, (TcpState)raw.first_state,
            raw.bytes_acked, raw.bytes_received, raw.segs_out, raw.segs_in, raw.srtt_us, raw.total_retrans,
            CommNames.Get(new ReadOnlySpan<byte>(raw.comm, FsTcpRecord.CommLength)));
        return DecodeResult.Ok;
    }

    /// <summary>
    /// Decodes the socket-table entry of socket <paramref name="sockId"/> as read at
    /// <paramref name="nowNs"/> (CLOCK_MONOTONIC): an open connection, without counters.
    /// </summary>
    public static unsafe DecodeResult TryDecode(ulong sockId, in FsTcpSocket socket, ulong nowNs, out TcpRecord record)
    {
        record = default;
        if (socket.established == 0)
        {
            return DecodeResult.NotEstablished;
        }
        fixed (FsTcpSocket* s = &socket)
        {
            if (!TryAddresses(s->family, s->saddr, s->daddr, out var family, out var local, out var remote))
            {
                return DecodeResult.UnknownFamily;
            }
            record = new TcpRecord(
                s->tgid, s->pid, family, TcpState.Established, TcpState.Established,
                nowNs, s->start_ns, s->cgroup_id, sockId, local, remote,
                s->sport, s->dport, s->initiator != 0, (TcpState)s->first_state,
                0, 0, 0, 0, 0, 0,
                CommNames.Get(new ReadOnlySpan<byte>(s->comm, FsTcpRecord.CommLength)));
        }
        return DecodeResult.Ok;
    }

    // IPv4 addresses use the first 4 of the 16 bytes. Held inline: two IPAddress objects per
    // record were the TCP path's largest allocation left.
    private static unsafe bool TryAddresses(ushort raw, byte* saddr, byte* daddr, out AddressFamily family, out IpAddress16 local, out IpAddress16 remote)
    {
        family = raw switch
        {
            AfInet => AddressFamily.InterNetwork,
            AfInet6 => AddressFamily.InterNetworkV6,
            _ => AddressFamily.Unknown,
        };
        if (family == AddressFamily.Unknown)
        {
            local = remote = default;
            return false;
        }
        bool isIPv4 = family == AddressFamily.InterNetwork;
        local = IpAddress16.FromKernel(isIPv4, new ReadOnlySpan<byte>(saddr, 16));
        remote = IpAddress16.FromKernel(isIPv4, new ReadOnlySpan<byte>(daddr, 16));
        return true;
    }
}
