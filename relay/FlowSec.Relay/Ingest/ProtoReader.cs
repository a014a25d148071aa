using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Text.Unicode;

namespace FlowSec.Relay.Ingest;

/// <summary>
/// Reads protobuf's wire format from a span, for <see cref="EventBatchDecoder"/>. It is at least as
/// strict as Google.Protobuf: whatever it accepts, Google.Protobuf accepts and reads the same way
/// (varints of at most 10 bytes, 32-bit fields taking a varint's low 32 bits, lengths checked against
/// the message's end, strings valid UTF-8, unknown fields skipped by wire type). Where it refuses
/// something (throws <see cref="MalformedProtobufException"/>), the decoder lets Google.Protobuf
/// judge the whole batch, so the error users see, and what is accepted, stay Google.Protobuf's.
/// </summary>
internal ref struct ProtoReader(ReadOnlySpan<byte> data, int start, int end)
{
    /// <summary>Groups nested in unknown fields, at most (Google.Protobuf allows about 100: deeper ones go to it).</summary>
    private const int MaxGroupDepth = 32;

    private readonly ReadOnlySpan<byte> _data = data;
    private readonly int _end = end;
    private int _position = start;

    /// <summary>Whether the message (or the sub-message this reader covers) has been read to its end.</summary>
    public readonly bool AtEnd => _position >= _end;

    /// <summary>The next tag: field number and wire type. Field number 0 is invalid.</summary>
    public uint ReadTag()
    {
        var tag = (uint)ReadVarint();
        if (tag >> 3 == 0)
        {
            throw new MalformedProtobufException("invalid tag (field number 0)");
        }

        return tag;
    }

    /// <summary>A varint of at most 10 bytes (64-bit fields; 32-bit fields and enums take its low 32 bits, as Google.Protobuf does).</summary>
    public ulong ReadVarint()
    {
        var data = _data;
        var position = _position;
        if (position < _end && data[position] < 0x80)
        {
            _position = position + 1;
            return data[position];
        }

        ulong value = 0;
        for (var shift = 0; shift < 70; shift += 7)
        {
            if (position >= _end)
            {
                throw new MalformedProtobufException("truncated varint");
            }

            var b = data[position++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80)
            {
                _position = position;
                return value;
            }
        }

        throw new MalformedProtobufException("varint longer than 10 bytes");
    }

    /// <summary>A fixed64 field.</summary>
    public ulong ReadFixed64()
    {
        if (_end - _position < 8)
        {
            throw new MalformedProtobufException("truncated fixed64");
        }

        var value = BinaryPrimitives.ReadUInt64LittleEndian(_data[_position..]);
        _position += 8;
        return value;
    }

    /// <summary>A length-delimited field (bytes, or a sub-message): where its content starts, and how long it is.</summary>
    public ByteRange ReadLengthDelimited()
    {
        // Google.Protobuf reads lengths as a varint's low 32 bits, as a signed int.
        var length = (int)(uint)ReadVarint();
        if (length < 0 || length > _end - _position)
        {
            throw new MalformedProtobufException(length < 0 ? "negative length" : "length past the end of the message");
        }

        var range = new ByteRange(_position, length);
        _position += length;
        return range;
    }

    /// <summary>A string field: its bytes, which must be valid UTF-8 (Google.Protobuf refuses other strings).</summary>
    public ByteRange ReadString()
    {
        var range = ReadLengthDelimited();
        if (!IsShortAscii(range) && !Utf8.IsValid(_data.Slice(range.Start, range.Length)))
        {
            throw new MalformedProtobufException("string is not valid UTF-8");
        }

        return range;
    }

    // Most strings (names, pods, states) are short ASCII, which is valid UTF-8: with 16 bytes of the
    // message from the string's start, one vector load and a sign-bit mask tell, without a call.
    private readonly bool IsShortAscii(ByteRange range)
    {
        if (range.Length >= Vector128<byte>.Count || _data.Length - range.Start < Vector128<byte>.Count)
        {
            return false;
        }

        var bytes = Vector128.Create<byte>(_data.Slice(range.Start, Vector128<byte>.Count));
        return (bytes.ExtractMostSignificantBits() & ((1u << range.Length) - 1)) == 0;
    }

    /// <summary>Skips the value of a field this reader does not know (forward compatibility: newer sensors may send more).</summary>
    public void Skip(uint tag) => Skip(tag, 0);

    private void Skip(uint tag, int depth)
    {
        switch (tag & 7)
        {
            case 0:
                ReadVarint();
                break;
            case 1:
                Advance(8);
                break;
            case 2:
                ReadLengthDelimited();
                break;
            case 3:
                SkipGroup(tag, depth + 1);
                break;
            case 5:
                Advance(4);
                break;
            case 4:
                throw new MalformedProtobufException("end-group tag without its start");
            default:
                throw new MalformedProtobufException($"invalid wire type {tag & 7}");
        }
    }

    private void SkipGroup(uint startTag, int depth)
    {
        if (depth > MaxGroupDepth)
        {
            throw new MalformedProtobufException("groups nested too deep");
        }

        while (true)
        {
            if (AtEnd)
            {
                throw new MalformedProtobufException("truncated group");
            }

            var tag = ReadTag();
            if ((tag & 7) == 4)
            {
                if (tag >> 3 != startTag >> 3)
                {
                    throw new MalformedProtobufException("mismatched end-group tag");
                }

                return;
            }

            Skip(tag, depth);
        }
    }

    private void Advance(int count)
    {
        if (_end - _position < count)
        {
            throw new MalformedProtobufException("truncated field");
        }

        _position += count;
    }
}

/// <summary>Where a length-delimited field's content lies in the message.</summary>
/// <param name="Start">Offset of its first byte.</param>
/// <param name="Length">Its length in bytes.</param>
internal readonly record struct ByteRange(int Start, int Length)
{
    /// <summary>Offset just past its last byte.</summary>
    public int End => Start + Length;
}

/// <summary>Input <see cref="ProtoReader"/> refuses to read; Google.Protobuf then judges it.</summary>
internal sealed class MalformedProtobufException(string message) : Exception(message);
