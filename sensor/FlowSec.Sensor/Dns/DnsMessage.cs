using System.Net;

namespace FlowSec.Sensor.Dns;

/// <summary>Why a DNS message could not be parsed completely (the first problem found).</summary>
public enum DnsMalformation : byte
{
    /// <summary>Parsed completely (up to the answers kept).</summary>
    None = 0,

    /// <summary>Shorter than the 12-byte header.</summary>
    HeaderTruncated,

    /// <summary>A name, question or record runs past the end of the message.</summary>
    Truncated,

    /// <summary>The header declares more questions/records than the remaining bytes can hold.</summary>
    CountExceedsPacket,

    /// <summary>A label length byte above 63 (the reserved 0x40/0x80 label types).</summary>
    LabelTooLong,

    /// <summary>A name longer than 255 octets on the wire (RFC 1035 §3.1).</summary>
    NameTooLong,

    /// <summary>A compression pointer beyond the end of the message.</summary>
    PointerOutOfRange,

    /// <summary>A compression pointer to its own position or later: compression only refers back.</summary>
    PointerForward,

    /// <summary>A compression pointer into the name being read (it would repeat forever), or too many pointers.</summary>
    PointerLoop,

    /// <summary>Record data that does not fit its type (an A record that is not 4 bytes, a name that does not fill RDATA, ...).</summary>
    InvalidRecordData,
}

/// <summary>The fixed 12-byte DNS header (RFC 1035 §4.1.1).</summary>
/// <param name="Id">Transaction id.</param>
/// <param name="Flags">The flags word: QR, opcode, AA, TC, RD, RA, Z, rcode.</param>
/// <param name="QuestionCount">QDCOUNT.</param>
/// <param name="AnswerCount">ANCOUNT.</param>
/// <param name="AuthorityCount">NSCOUNT.</param>
/// <param name="AdditionalCount">ARCOUNT.</param>
public readonly record struct DnsHeader(
    ushort Id, ushort Flags, ushort QuestionCount, ushort AnswerCount, ushort AuthorityCount, ushort AdditionalCount)
{
    /// <summary>QR: a response (true) or a query.</summary>
    public bool IsResponse => (Flags & 0x8000) != 0;

    /// <summary>OPCODE (0 = QUERY).</summary>
    public int Opcode => (Flags >> 11) & 0xF;

    /// <summary>AA: authoritative answer.</summary>
    public bool Authoritative => (Flags & 0x0400) != 0;

    /// <summary>TC: the server truncated the message (the client should retry over TCP).</summary>
    public bool Truncated => (Flags & 0x0200) != 0;

    /// <summary>RD: recursion desired.</summary>
    public bool RecursionDesired => (Flags & 0x0100) != 0;

    /// <summary>RA: recursion available.</summary>
    public bool RecursionAvailable => (Flags & 0x0080) != 0;

    /// <summary>RCODE (the 4 header bits; <see cref="DnsMessage.Rcode"/> adds EDNS's extension).</summary>
    public int Rcode => Flags & 0xF;
}

/// <summary>One resource record of the answer section.</summary>
/// <param name="Name">Owner name in presentation form (lower case, no trailing dot, "." for the root).</param>
/// <param name="Type">RR type number (1 = A, 28 = AAAA, 5 = CNAME, ...).</param>
/// <param name="Class">RR class (1 = IN).</param>
/// <param name="Ttl">TTL in seconds, as sent.</param>
/// <param name="Data">RDATA in presentation form: an address, a name, "10 mx.example", or RFC 3597 <c>\# len hex</c> for other types.</param>
/// <param name="Address">The address of an A or AAAA record; null for other types.</param>
public sealed record DnsResourceRecord(string Name, ushort Type, ushort Class, uint Ttl, string Data, IPAddress? Address);

/// <summary>
/// A parsed DNS message: header, first question and answers. Parsing stops at the first problem;
/// what was read before it is kept and <see cref="Malformed"/> says what went wrong and where.
/// </summary>
public sealed class DnsMessage
{
    internal static readonly IReadOnlyList<DnsResourceRecord> NoAnswers = Array.Empty<DnsResourceRecord>();

    internal DnsMessage(DnsHeader header)
    {
        Header = header;
    }

    /// <summary>The header (all zero when <see cref="Malformed"/> is <see cref="DnsMalformation.HeaderTruncated"/>).</summary>
    public DnsHeader Header { get; }

    /// <summary>True when the first question was read.</summary>
    public bool HasQuestion { get; internal set; }

    /// <summary>The first question's name in presentation form; empty when there is none.</summary>
    public string QuestionName { get; internal set; } = "";

    /// <summary>The first question's QTYPE.</summary>
    public ushort QuestionType { get; internal set; }

    /// <summary>The first question's QCLASS.</summary>
    public ushort QuestionClass { get; internal set; }

    /// <summary>Answers read, in message order (at most the limit passed to the parser).</summary>
    public IReadOnlyList<DnsResourceRecord> Answers { get; internal set; } = NoAnswers;

    /// <summary>The full response code: the header's 4 bits, extended by an EDNS OPT record when present.</summary>
    public int Rcode
    {
        get => _rcode ?? Header.Rcode;
        internal set => _rcode = value;
    }

    private int? _rcode;

    /// <summary>True when the message has more answers than were kept.</summary>
    public bool AnswersLimited { get; internal set; }

    /// <summary>The first problem found; <see cref="DnsMalformation.None"/> for a well-formed message.</summary>
    public DnsMalformation Malformed { get; internal set; }

    /// <summary>Byte offset at which <see cref="Malformed"/> was detected; -1 when well-formed.</summary>
    public int MalformedOffset { get; internal set; } = -1;
}
