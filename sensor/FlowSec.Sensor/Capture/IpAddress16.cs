using System.Buffers.Binary;
using System.Net;
using FlowSec.Sensor.Dns;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// An IP address held inline, without a heap object: its 16-byte IPv6 form as one number (an IPv4
/// address as <c>::ffff:a.b.c.d</c>) and whether it is IPv4. The TCP path decodes every record's
/// two addresses into these; an <see cref="IPAddress"/> per address was the largest allocation left
/// per record (docs/benchmarks.md, issue 3, seventh session). Convert with
/// <see cref="ToIPAddress"/> only where an API needs one.
/// </summary>
internal readonly record struct IpAddress16
{
    private const ulong MappedPrefix = 0xFFFF_0000_0000UL;

    private IpAddress16(UInt128 value, bool isIPv4)
    {
        Value = value;
        IsIPv4 = isIPv4;
    }

    /// <summary>
    /// The address in its 16-byte IPv6 form read as a big-endian number (IPv4 as
    /// <c>::ffff:a.b.c.d</c>): the two forms of one IPv4 address have the same value, as
    /// <see cref="Dns.DnsNameCache"/> keys them.
    /// </summary>
    public UInt128 Value { get; }

    /// <summary>True for a 4-byte (AF_INET) address; false for IPv6, IPv4-mapped included.</summary>
    public bool IsIPv4 { get; }

    /// <summary>True for an IPv6 address of the form <c>::ffff:a.b.c.d</c> (a dual-stack socket's IPv4 peer).</summary>
    public bool IsIPv4MappedToIPv6 => !IsIPv4 && (ulong)(Value >> 64) == 0 && ((ulong)Value & 0xFFFF_FFFF_0000_0000UL) == MappedPrefix;

    /// <summary>
    /// The address a BPF program stored: <paramref name="bytes"/> holds 16 bytes in network order,
    /// IPv4 in the first 4 when <paramref name="isIPv4"/>.
    /// </summary>
    public static IpAddress16 FromKernel(bool isIPv4, ReadOnlySpan<byte> bytes) =>
        new(DnsNameCache.KeyOf(isIPv4 ? bytes[..4] : bytes[..16]), isIPv4);

    /// <summary>The value of <paramref name="address"/> (IPv4 or IPv6); for tests and cold paths.</summary>
    public static IpAddress16 From(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        bool isIPv4 = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork;
        address.TryWriteBytes(bytes, out _);
        return FromKernel(isIPv4, bytes);
    }

    /// <summary>
    /// Writes the bytes a flow carries for this address into <paramref name="destination"/> (16
    /// bytes at least) and returns how many: 4 for IPv4 and IPv4-mapped IPv6 (a dual-stack socket
    /// reports IPv4 peers as <c>::ffff:a.b.c.d</c>; the flow carries them as IPv4), else 16.
    /// </summary>
    public int WriteFlowBytes(Span<byte> destination)
    {
        if (IsIPv4 || IsIPv4MappedToIPv6)
        {
            BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)Value);
            return 4;
        }
        BinaryPrimitives.WriteUInt128BigEndian(destination, Value);
        return 16;
    }

    /// <summary>The address as an <see cref="IPAddress"/> (allocates): IPv4 stays IPv4, IPv6 (mapped included) stays IPv6.</summary>
    public IPAddress ToIPAddress()
    {
        Span<byte> bytes = stackalloc byte[16];
        if (IsIPv4)
        {
            BinaryPrimitives.WriteUInt32BigEndian(bytes, (uint)Value);
            return new IPAddress(bytes[..4]);
        }
        BinaryPrimitives.WriteUInt128BigEndian(bytes, Value);
        return new IPAddress(bytes);
    }

    /// <inheritdoc />
    public override string ToString() => ToIPAddress().ToString();
}
