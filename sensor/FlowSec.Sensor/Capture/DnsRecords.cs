using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using FlowSec.Sensor.Dns;

namespace FlowSec.Sensor.Capture;

// C# mirrors of the DNS part of bpf/flowsec.h, the single source of truth for kernel-to-user
// layouts. DnsKernelLayoutTests compares them with the BTF of bpf/dns.bpf.o: edit both together.

/// <summary>Mirror of <c>enum fs_dns_counter</c>: indexes into the DNS object's per-CPU <c>counters</c> map.</summary>
internal enum DnsKernelCounter : uint
{
    /// <summary>FS_DNS_COUNTER_RINGBUF_RESERVE_FAILED: a record was lost because the ring buffer was full.</summary>
    RingBufferReserveFailed = 0,

    /// <summary>FS_DNS_COUNTER_PAYLOAD_TRUNCATED: a message longer than FS_DNS_MAX_PAYLOAD was cut.</summary>
    PayloadTruncated = 1,

    /// <summary>FS_DNS_COUNTER_LOAD_FAILED: the payload could not be copied; the record went without it.</summary>
    LoadFailed = 2,
}

/// <summary>Mirror of <c>struct fs_dns_record</c> (616 bytes, no implicit padding).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FsDnsRecord
{
    /// <summary>FS_RECORD_DNS.</summary>
    public const uint RecordKind = 32;

    /// <summary>FS_DNS_MAX_PAYLOAD.</summary>
    public const int MaxPayload = 512;

    /// <summary>FS_COMM_LEN.</summary>
    public const int CommLength = 16;

    /// <summary>FS_DNS_EGRESS (FS_DNS_INGRESS is 0).</summary>
    public const byte Egress = 1;

    public uint kind;
    public uint tgid;
    public uint pid;
    public ushort family;
    public byte direction;
    public byte protocol;
    public ulong timestamp_ns;
    public ulong cgroup_id;
    public ulong sock_cookie;
    public fixed byte saddr[16];
    public fixed byte daddr[16];
    public ushort sport;
    public ushort dport;
    public ushort payload_len;
    public ushort captured_len;
    public uint ifindex;
    public uint tcp_offset;
    public fixed byte comm[CommLength];
    public fixed byte payload[MaxPayload];
}

/// <summary>
/// Turns raw DNS ring-buffer samples into a <see cref="DnsObservation"/> plus the captured
/// message bytes. Never throws on bad input: a sample that does not fit is reported as a
/// <see cref="DecodeResult"/> for the caller to count.
/// </summary>
internal static class DnsRecordDecoder
{
    private const ushort AfInet = 2;
    private const ushort AfInet6 = 10;
    private const byte IpProtoTcp = 6;

    /// <summary>Size of <c>struct fs_dns_record</c>.</summary>
    public static readonly int RecordSize = Marshal.SizeOf<FsDnsRecord>();

    /// <summary>Offset of <c>payload</c> in the record.</summary>
    public static readonly int PayloadOffset = (int)Marshal.OffsetOf<FsDnsRecord>(nameof(FsDnsRecord.payload));

    /// <summary>
    /// Decodes <paramref name="data"/> (host byte order, as the kernel wrote it).
    /// <paramref name="message"/> points into <paramref name="data"/>: valid only as long as it is.
    /// </summary>
    public static DecodeResult TryDecode(ReadOnlySpan<byte> data, out DnsObservation observation, out ReadOnlySpan<byte> message)
    {
        observation = default;
        message = default;
        if (data.Length < RecordSize)
        {
            return DecodeResult.TooShort;
        }
        FsDnsRecord raw = MemoryMarshal.Read<FsDnsRecord>(data);
        if (raw.kind != FsDnsRecord.RecordKind)
        {
            return DecodeResult.UnknownKind;
        }
        if (raw.captured_len > FsDnsRecord.MaxPayload)
        {
            return DecodeResult.TooShort;
        }
        int addressLength = raw.family switch
        {
            AfInet => 4,
            AfInet6 => 16,
            _ => 0,
        };
        if (addressLength == 0)
        {
            return DecodeResult.UnknownFamily;
        }
        string comm;
        unsafe
        {
            var name = new ReadOnlySpan<byte>(raw.comm, FsDnsRecord.CommLength);
            int nul = name.IndexOf((byte)0);
            comm = nul == 0 ? "" : Encoding.UTF8.GetString(nul > 0 ? name[..nul] : name);
            observation = new DnsObservation(
                (long)raw.timestamp_ns,
                raw.direction == FsDnsRecord.Egress,
                new IPAddress(new ReadOnlySpan<byte>(raw.saddr, addressLength)),
                raw.sport,
                new IPAddress(new ReadOnlySpan<byte>(raw.daddr, addressLength)),
                raw.dport,
                raw.tgid,
                comm,
                raw.cgroup_id,
                raw.payload_len,
                raw.protocol == IpProtoTcp ? DnsObservation.Tcp : DnsObservation.Udp,
                raw.sock_cookie,
                raw.tcp_offset);
        }
        message = data.Slice(PayloadOffset, raw.captured_len);
        return DecodeResult.Ok;
    }
}
