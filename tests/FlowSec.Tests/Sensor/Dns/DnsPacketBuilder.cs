using System.Buffers.Binary;
using System.Net;
using System.Text;

namespace FlowSec.Tests.Sensor.Dns;

/// <summary>
/// Writes DNS messages byte by byte for tests: header, names (optionally compressed the way real
/// servers do, by pointing at an earlier copy of a suffix), questions and records. Also the raw
/// primitives, so a test can write exactly the hostile bytes it means.
/// </summary>
internal sealed class DnsPacketBuilder
{
    private readonly List<byte> _bytes = [];
    private readonly Dictionary<string, int> _suffixes = new(StringComparer.Ordinal);

    public DnsPacketBuilder(ushort id, ushort flags, int questions, int answers, int authority = 0, int additional = 0)
    {
        U16(id).U16(flags).U16((ushort)questions).U16((ushort)answers).U16((ushort)authority).U16((ushort)additional);
    }

    /// <summary>Flags of a standard query with RD set.</summary>
    public const ushort QueryFlags = 0x0100;

    /// <summary>Flags of a NOERROR response with RD and RA set; or in an rcode.</summary>
    public const ushort ResponseFlags = 0x8180;

    public int Length => _bytes.Count;

    public static DnsPacketBuilder Query(ushort id, string name, ushort type) =>
        new DnsPacketBuilder(id, QueryFlags, 1, 0).Question(name, type);

    public DnsPacketBuilder U8(byte value)
    {
        _bytes.Add(value);
        return this;
    }

    public DnsPacketBuilder U16(ushort value) => U8((byte)(value >> 8)).U8((byte)value);

    public DnsPacketBuilder U32(uint value) => U16((ushort)(value >> 16)).U16((ushort)value);

    public DnsPacketBuilder Bytes(params byte[] bytes)
    {
        _bytes.AddRange(bytes);
        return this;
    }

    /// <summary>A compression pointer to <paramref name="offset"/>.</summary>
    public DnsPacketBuilder Pointer(int offset) => U16((ushort)(0xC000 | offset));

    /// <summary>A dotted name ("." or "" for the root); compressed against earlier names unless told not to.</summary>
    public DnsPacketBuilder Name(string name, bool compress = true) => Labels(Split(name), compress);

    private static byte[][] Split(string name) =>
        name is "" or "." ? [] : name.Split('.').Select(Encoding.ASCII.GetBytes).ToArray();

    /// <summary>A name from raw labels (which may hold any bytes, dots included).</summary>
    public DnsPacketBuilder Labels(IReadOnlyList<byte[]> labels, bool compress = true)
    {
        for (int i = 0; i < labels.Count; i++)
        {
            string suffix = string.Join("|", labels.Skip(i).Select(Convert.ToHexString));
            if (compress && _suffixes.TryGetValue(suffix, out int at))
            {
                return Pointer(at);
            }
            if (_bytes.Count < 0x4000)
            {
                _suffixes.TryAdd(suffix, _bytes.Count);
            }
            U8((byte)labels[i].Length).Bytes(labels[i]);
        }
        return U8(0);
    }

    public DnsPacketBuilder Question(string name, ushort type, ushort @class = 1) => Name(name).U16(type).U16(@class);

    /// <summary>A record with the given RDATA bytes.</summary>
    public DnsPacketBuilder Record(string owner, ushort type, uint ttl, byte[] rdata, bool compress = true) =>
        Name(owner, compress).U16(type).U16(1).U32(ttl).U16((ushort)rdata.Length).Bytes(rdata);

    public DnsPacketBuilder A(string owner, string address, uint ttl = 300) =>
        Record(owner, 1, ttl, IPAddress.Parse(address).GetAddressBytes());

    public DnsPacketBuilder Aaaa(string owner, string address, uint ttl = 300) =>
        Record(owner, 28, ttl, IPAddress.Parse(address).GetAddressBytes());

    /// <summary>A record whose RDATA is <paramref name="prefix"/> then a (compressible) name: CNAME, NS, PTR, MX, SRV.</summary>
    public DnsPacketBuilder NameRecord(string owner, ushort type, string target, uint ttl = 300, byte[]? prefix = null, bool compress = true) =>
        NameRecord(Split(owner), type, Split(target), ttl, prefix, compress);

    /// <summary>As the string overload, with raw labels.</summary>
    public DnsPacketBuilder NameRecord(IReadOnlyList<byte[]> owner, ushort type, IReadOnlyList<byte[]> target, uint ttl, byte[]? prefix, bool compress)
    {
        Labels(owner, compress).U16(type).U16(1).U32(ttl);
        int lengthAt = _bytes.Count;
        U16(0);
        Bytes(prefix ?? []);
        Labels(target, compress);
        int length = _bytes.Count - lengthAt - 2;
        _bytes[lengthAt] = (byte)(length >> 8);
        _bytes[lengthAt + 1] = (byte)length;
        return this;
    }

    public DnsPacketBuilder Cname(string owner, string target, uint ttl = 300) => NameRecord(owner, 5, target, ttl);

    public byte[] Build() => [.. _bytes];

    /// <summary>Sets a 16-bit field of an already built message (e.g. a count).</summary>
    public static byte[] WithU16(byte[] message, int offset, ushort value)
    {
        var copy = (byte[])message.Clone();
        BinaryPrimitives.WriteUInt16BigEndian(copy.AsSpan(offset), value);
        return copy;
    }
}
