using System.Buffers.Binary;
using System.Net;
using System.Runtime.CompilerServices;

namespace FlowSec.Sensor.Dns;

/// <summary>
/// A DNS message parser (RFC 1035) for input from the network, which may be hostile. It never
/// throws and never loops: every length, count and compression pointer is checked against the
/// message before use, pointers must point strictly backwards (so a chain always ends), names are
/// capped at 255 octets and labels at 63. The first problem stops parsing and is reported in
/// <see cref="DnsMessage.Malformed"/>, with what was read before it.
/// </summary>
/// <remarks>
/// Names are returned in presentation form: lower case (DNS names are case-insensitive, and
/// resolvers randomise case), no trailing dot ("." for the root), and any byte other than
/// printable ASCII, '.' inside a label or '\' escaped as in zone files (<c>\.</c>, <c>\\</c>,
/// <c>\DDD</c>), so a hostile label can neither fake a dot nor smuggle control characters into
/// logs and UIs. Work per message is linear in its length; the only allocations are the result,
/// its strings and the answer list.
/// </remarks>
// The 2 KiB name buffer is only ever read where it was written: zeroing it on every call is waste.
[SkipLocalsInit]
public static class DnsParser
{
    /// <summary>Answers kept by default (a 512-byte message holds at most 46 records anyway).</summary>
    public const int DefaultMaxAnswers = 64;

    /// <summary>Wire length limit of a name, including length bytes and the root (RFC 1035 §3.1).</summary>
    public const int MaxNameOctets = 255;

    /// <summary>Longest presentation form of a name: every octet escaped as \DDD, plus dots.</summary>
    internal const int MaxNameChars = 1024;

    // Far beyond anything legitimate; the strictly-backwards rule already ends every chain.
    private const int MaxPointerHops = 64;
    private const int HeaderLength = 12;
    private const int MinQuestionLength = 5;  // root name + QTYPE + QCLASS
    private const int MinRecordLength = 11;   // root name + TYPE, CLASS, TTL, RDLENGTH
    private const int MaxRdataHexBytes = 64;
    private const int MaxTxtChars = 512;
    private const ushort TypeOpt = 41;

    /// <summary>Reads just the header; false when the message is shorter than 12 bytes.</summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> message, out DnsHeader header)
    {
        if (message.Length < HeaderLength)
        {
            header = default;
            return false;
        }
        header = new DnsHeader(
            BinaryPrimitives.ReadUInt16BigEndian(message),
            BinaryPrimitives.ReadUInt16BigEndian(message[2..]),
            BinaryPrimitives.ReadUInt16BigEndian(message[4..]),
            BinaryPrimitives.ReadUInt16BigEndian(message[6..]),
            BinaryPrimitives.ReadUInt16BigEndian(message[8..]),
            BinaryPrimitives.ReadUInt16BigEndian(message[10..]));
        return true;
    }

    /// <summary>
    /// Parses header, questions (the first is kept) and up to <paramref name="maxAnswers"/>
    /// answers; the other records are checked but not kept (an EDNS OPT record extends the
    /// rcode). With 0, a message that has answers is read only up to its question (what a query
    /// needs). Never throws.
    /// </summary>
    public static DnsMessage Parse(ReadOnlySpan<byte> message, int maxAnswers = DefaultMaxAnswers)
    {
        if (!TryReadHeader(message, out var header))
        {
            return new DnsMessage(default) { Malformed = DnsMalformation.HeaderTruncated, MalformedOffset = 0 };
        }
        var result = new DnsMessage(header);
        Span<char> text = stackalloc char[MaxNameChars];
        int offset = HeaderLength;

        for (int q = 0; q < header.QuestionCount; q++)
        {
            int start = offset;
            var error = ReadName(message, ref offset, message.Length, text, out int length);
            if (error == DnsMalformation.None && offset + 4 > message.Length)
            {
                error = DnsMalformation.Truncated;
            }
            if (error != DnsMalformation.None)
            {
                return Fail(result, OutOfData(error, header.QuestionCount - q, MinQuestionLength, message.Length - start), offset);
            }
            if (q == 0)
            {
                result.HasQuestion = true;
                result.QuestionName = new string(text[..length]);
                result.QuestionType = BinaryPrimitives.ReadUInt16BigEndian(message[offset..]);
                result.QuestionClass = BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 2)..]);
            }
            offset += 4;
        }

        int keep = Math.Max(maxAnswers, 0);
        result.AnswersLimited = header.AnswerCount > keep;
        if (maxAnswers <= 0 && header.AnswerCount > 0)
        {
            return result; // question only, as asked
        }
        List<DnsResourceRecord>? answers = null;
        int records = header.AnswerCount + header.AuthorityCount + header.AdditionalCount;
        for (int r = 0; r < records; r++)
        {
            // Answers are decoded up to the limit; the rest, authority and additional records are
            // only walked (names and lengths checked), so a lie anywhere in the message is caught.
            int start = offset;
            DnsMalformation error;
            if (r < header.AnswerCount && r < keep)
            {
                error = ReadRecord(message, ref offset, text, out var answer);
                if (error == DnsMalformation.None)
                {
                    (answers ??= new List<DnsResourceRecord>(Math.Min((int)header.AnswerCount, 8))).Add(answer!);
                }
            }
            else
            {
                error = SkipRecord(message, ref offset, text, out ushort type, out uint ttl);
                if (error == DnsMalformation.None && type == TypeOpt && r >= records - header.AdditionalCount)
                {
                    // EDNS (RFC 6891): the OPT record's TTL carries the upper 8 bits of a 12-bit RCODE.
                    result.Rcode = (int)(ttl >> 24) << 4 | header.Rcode;
                }
            }
            if (error != DnsMalformation.None)
            {
                result.Answers = answers ?? DnsMessage.NoAnswers;
                return Fail(result, OutOfData(error, records - r, MinRecordLength, message.Length - start), offset);
            }
        }
        result.Answers = answers ?? DnsMessage.NoAnswers;
        return result;
    }

    private static DnsMalformation SkipRecord(ReadOnlySpan<byte> message, ref int offset, Span<char> text, out ushort type, out uint ttl)
    {
        type = 0;
        ttl = 0;
        var error = ReadName(message, ref offset, message.Length, text, out _);
        if (error != DnsMalformation.None)
        {
            return error;
        }
        if (offset + 10 > message.Length)
        {
            return DnsMalformation.Truncated;
        }
        type = BinaryPrimitives.ReadUInt16BigEndian(message[offset..]);
        ttl = BinaryPrimitives.ReadUInt32BigEndian(message[(offset + 4)..]);
        int rdEnd = offset + 10 + BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 8)..]);
        if (rdEnd > message.Length)
        {
            offset += 10;
            return DnsMalformation.Truncated;
        }
        offset = rdEnd;
        return DnsMalformation.None;
    }

    /// <summary>
    /// Reads a possibly compressed name at <paramref name="offset"/> into <paramref name="text"/>
    /// (at least <see cref="MaxNameChars"/> long) and advances <paramref name="offset"/> past the
    /// bytes the name occupies in place. Those must end by <paramref name="limit"/> (the end of the
    /// RDATA holding the name); pointers may lead anywhere earlier in the message.
    /// </summary>
    internal static DnsMalformation ReadName(ReadOnlySpan<byte> message, ref int offset, int limit, Span<char> text, out int length)
    {
        length = 0;
        int pos = offset;
        int segmentStart = offset;
        int end = Math.Min(limit, message.Length);
        bool jumped = false;
        int octets = 1; // the root label's length byte
        int hops = 0;
        while (true)
        {
            if (pos >= end)
            {
                return OutOfBounds(message, pos, jumped);
            }
            int b = message[pos];
            switch (b & 0xC0)
            {
                case 0xC0:
                    {
                        if (pos + 1 >= end)
                        {
                            return OutOfBounds(message, pos + 1, jumped);
                        }
                        int target = ((b & 0x3F) << 8) | message[pos + 1];
                        if (!jumped)
                        {
                            offset = pos + 2;
                        }
                        if (target >= message.Length)
                        {
                            return DnsMalformation.PointerOutOfRange;
                        }
                        if (target > pos)
                        {
                            return DnsMalformation.PointerForward;
                        }
                        // Strictly before the segment being read: each hop goes further back, so chains end.
                        if (target >= segmentStart || ++hops > MaxPointerHops)
                        {
                            return DnsMalformation.PointerLoop;
                        }
                        jumped = true;
                        pos = segmentStart = target;
                        end = message.Length;
                        break;
                    }
                case 0x40:
                case 0x80:
                    return DnsMalformation.LabelTooLong;
                default:
                    {
                        if (b == 0)
                        {
                            if (!jumped)
                            {
                                offset = pos + 1;
                            }
                            if (length == 0)
                            {
                                text[length++] = '.';
                            }
                            return DnsMalformation.None;
                        }
                        octets += b + 1;
                        if (octets > MaxNameOctets)
                        {
                            return DnsMalformation.NameTooLong;
                        }
                        if (pos + 1 + b > end)
                        {
                            return OutOfBounds(message, pos + 1 + b, jumped);
                        }
                        if (length > 0)
                        {
                            text[length++] = '.';
                        }
                        length += AppendLabel(message.Slice(pos + 1, b), text[length..]);
                        pos += 1 + b;
                        break;
                    }
            }
        }
    }

    // Past the message is truncation; past the RDATA but inside the message is bad record data.
    private static DnsMalformation OutOfBounds(ReadOnlySpan<byte> message, int pos, bool jumped) =>
        jumped || pos >= message.Length ? DnsMalformation.Truncated : DnsMalformation.InvalidRecordData;

    private static int AppendLabel(ReadOnlySpan<byte> label, Span<char> text)
    {
        int n = 0;
        foreach (byte c in label)
        {
            if (c is >= (byte)'A' and <= (byte)'Z')
            {
                text[n++] = (char)(c + 32);
            }
            else if (c is (byte)'.' or (byte)'\\')
            {
                text[n++] = '\\';
                text[n++] = (char)c;
            }
            else if (c is > 0x20 and < 0x7F)
            {
                text[n++] = (char)c;
            }
            else
            {
                text[n++] = '\\';
                text[n++] = (char)('0' + c / 100);
                text[n++] = (char)('0' + c / 10 % 10);
                text[n++] = (char)('0' + c % 10);
            }
        }
        return n;
    }

    private static DnsMalformation ReadRecord(ReadOnlySpan<byte> message, ref int offset, Span<char> text, out DnsResourceRecord? answer)
    {
        answer = null;
        var error = ReadName(message, ref offset, message.Length, text, out int nameLength);
        if (error != DnsMalformation.None)
        {
            return error;
        }
        if (offset + 10 > message.Length)
        {
            return DnsMalformation.Truncated;
        }
        string name = new(text[..nameLength]);
        ushort type = BinaryPrimitives.ReadUInt16BigEndian(message[offset..]);
        ushort @class = BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 2)..]);
        uint ttl = BinaryPrimitives.ReadUInt32BigEndian(message[(offset + 4)..]);
        int rdLength = BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 8)..]);
        int rdStart = offset + 10;
        int rdEnd = rdStart + rdLength;
        if (rdEnd > message.Length)
        {
            offset = rdStart;
            return DnsMalformation.Truncated;
        }
        offset = rdStart;
        error = ReadData(message, type, rdStart, rdEnd, text, out string data, out IPAddress? address);
        if (error != DnsMalformation.None)
        {
            return error;
        }
        offset = rdEnd;
        answer = new DnsResourceRecord(name, type, @class, ttl, data, address);
        return DnsMalformation.None;
    }

    private static DnsMalformation ReadData(
        ReadOnlySpan<byte> message, ushort type, int start, int end, Span<char> text, out string data, out IPAddress? address)
    {
        data = "";
        address = null;
        var rdata = message[start..end];
        int pos = start;
        int length;
        DnsMalformation error;
        switch (type)
        {
            case DnsNames.TypeA or DnsNames.TypeAaaa:
                if (rdata.Length != (type == DnsNames.TypeA ? 4 : 16))
                {
                    return DnsMalformation.InvalidRecordData;
                }
                address = new IPAddress(rdata);
                data = address.ToString();
                return DnsMalformation.None;

            case DnsNames.TypeCname or DnsNames.TypeNs or DnsNames.TypePtr or DnsNames.TypeDname:
                error = ReadName(message, ref pos, end, text, out length);
                if (error == DnsMalformation.None && pos != end)
                {
                    error = DnsMalformation.InvalidRecordData;
                }
                if (error == DnsMalformation.None)
                {
                    data = new string(text[..length]);
                }
                return error;

            case DnsNames.TypeMx:
                if (rdata.Length < 3)
                {
                    return DnsMalformation.InvalidRecordData;
                }
                pos += 2;
                error = ReadName(message, ref pos, end, text, out length);
                if (error == DnsMalformation.None && pos != end)
                {
                    error = DnsMalformation.InvalidRecordData;
                }
                if (error == DnsMalformation.None)
                {
                    data = $"{BinaryPrimitives.ReadUInt16BigEndian(rdata)} {text[..length]}";
                }
                return error;

            case DnsNames.TypeSrv:
                if (rdata.Length < 7)
                {
                    return DnsMalformation.InvalidRecordData;
                }
                pos += 6;
                error = ReadName(message, ref pos, end, text, out length);
                if (error == DnsMalformation.None && pos != end)
                {
                    error = DnsMalformation.InvalidRecordData;
                }
                if (error == DnsMalformation.None)
                {
                    data = $"{BinaryPrimitives.ReadUInt16BigEndian(rdata)} {BinaryPrimitives.ReadUInt16BigEndian(rdata[2..])} " +
                           $"{BinaryPrimitives.ReadUInt16BigEndian(rdata[4..])} {text[..length]}";
                }
                return error;

            case DnsNames.TypeSoa:
                {
                    error = ReadName(message, ref pos, end, text, out length);
                    if (error != DnsMalformation.None)
                    {
                        return error;
                    }
                    string mname = new(text[..length]);
                    error = ReadName(message, ref pos, end, text, out length);
                    if (error != DnsMalformation.None)
                    {
                        return error;
                    }
                    if (end - pos != 20)
                    {
                        return DnsMalformation.InvalidRecordData;
                    }
                    var n = message[pos..end];
                    data = $"{mname} {text[..length]} {BinaryPrimitives.ReadUInt32BigEndian(n)} {BinaryPrimitives.ReadUInt32BigEndian(n[4..])} " +
                           $"{BinaryPrimitives.ReadUInt32BigEndian(n[8..])} {BinaryPrimitives.ReadUInt32BigEndian(n[12..])} {BinaryPrimitives.ReadUInt32BigEndian(n[16..])}";
                    return DnsMalformation.None;
                }

            case DnsNames.TypeTxt:
                return ReadTxt(rdata, out data);

            default:
                data = GenericData(rdata);
                return DnsMalformation.None;
        }
    }

    // Character-strings, each quoted with " and \ escaped and non-printables as \DDD; capped for hostile sizes.
    private static DnsMalformation ReadTxt(ReadOnlySpan<byte> rdata, out string data)
    {
        data = "";
        // Room past the cap for one escaped byte, the closing mark and a separator.
        Span<char> text = stackalloc char[MaxTxtChars + 16];
        int n = 0;
        int pos = 0;
        bool capped = false;
        while (pos < rdata.Length)
        {
            int len = rdata[pos];
            if (pos + 1 + len > rdata.Length)
            {
                return DnsMalformation.InvalidRecordData;
            }
            if (!capped && n >= MaxTxtChars)
            {
                capped = true;
                text[n++] = '…';
            }
            if (!capped)
            {
                if (n > 0)
                {
                    text[n++] = ' ';
                }
                text[n++] = '"';
                foreach (byte c in rdata.Slice(pos + 1, len))
                {
                    if (n > MaxTxtChars)
                    {
                        capped = true;
                        break;
                    }
                    if (c is (byte)'"' or (byte)'\\')
                    {
                        text[n++] = '\\';
                        text[n++] = (char)c;
                    }
                    else if (c is >= 0x20 and < 0x7F)
                    {
                        text[n++] = (char)c;
                    }
                    else
                    {
                        text[n++] = '\\';
                        text[n++] = (char)('0' + c / 100);
                        text[n++] = (char)('0' + c / 10 % 10);
                        text[n++] = (char)('0' + c % 10);
                    }
                }
                text[n++] = capped ? '…' : '"';
            }
            pos += 1 + len;
        }
        data = new string(text[..n]);
        return DnsMalformation.None;
    }

    // RFC 3597 generic form "\# <length> <hex>", the hex cut after MaxRdataHexBytes.
    private static string GenericData(ReadOnlySpan<byte> rdata)
    {
        var shown = rdata[..Math.Min(rdata.Length, MaxRdataHexBytes)];
        string hex = Convert.ToHexString(shown);
        return rdata.Length == 0 ? @"\# 0"
            : shown.Length < rdata.Length ? $@"\# {rdata.Length} {hex}…"
            : $@"\# {rdata.Length} {hex}";
    }

    private static DnsMalformation OutOfData(DnsMalformation error, int remaining, int minimumLength, int bytesLeft) =>
        error == DnsMalformation.Truncated && (long)remaining * minimumLength > bytesLeft ? DnsMalformation.CountExceedsPacket : error;

    private static DnsMessage Fail(DnsMessage result, DnsMalformation error, int offset)
    {
        result.Malformed = error;
        result.MalformedOffset = offset;
        return result;
    }
}
