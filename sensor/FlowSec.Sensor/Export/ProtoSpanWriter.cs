using System.Buffers.Binary;
using System.Text;

namespace FlowSec.Sensor.Export;

/// <summary>
/// Writes protobuf wire primitives into a span, byte for byte as Google.Protobuf's
/// <c>WriteContext</c> writes them, but without its buffer state and refresh checks per primitive,
/// and with a raw-bytes write (which <c>WriteContext</c> lacks) for bytes encoded earlier. The
/// caller sizes the message first (<see cref="VarintSize(ulong)"/>, <see cref="StringSize"/>): the
/// span must be large enough.
/// </summary>
internal ref struct ProtoSpanWriter(Span<byte> buffer)
{
    // Google.Protobuf transcodes with a UTF-8 encoding that replaces lone surrogates (U+FFFD), as this one does.
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

    // A string of at most this many UTF-16 units is at most 126 UTF-8 bytes: its length is one varint byte.
    private const int OneByteLengthChars = 42;

    private readonly Span<byte> _buffer = buffer;
    private int _position;

    /// <summary>Bytes written so far.</summary>
    public readonly int Position => _position;

    /// <summary>A tag of a field number below 16 (one byte).</summary>
    public void Tag(byte tag) => _buffer[_position++] = tag;

    /// <summary>An unsigned varint (uint32, uint64 and length fields).</summary>
    public void Varint(ulong value)
    {
        while (value >= 0x80)
        {
            _buffer[_position++] = (byte)(value | 0x80);
            value >>= 7;
        }
        _buffer[_position++] = (byte)value;
    }

    /// <summary>An enum or int32: negative values take ten bytes, sign-extended, as protobuf writes them.</summary>
    public void Int32(int value) => Varint((ulong)(long)value);

    /// <summary>A fixed64 field's value.</summary>
    public void Fixed64(ulong value)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(_buffer[_position..], value);
        _position += 8;
    }

    /// <summary>A string's length and UTF-8 bytes.</summary>
    public void String(string value)
    {
        if (value.Length <= OneByteLengthChars)
        {
            // Transcode straight after a one-byte length instead of counting the bytes first.
            int written = Utf8.GetBytes(value, _buffer[(_position + 1)..]);
            _buffer[_position] = (byte)written;
            _position += 1 + written;
            return;
        }
        int length = Utf8.GetByteCount(value);
        Varint((uint)length);
        _position += Utf8.GetBytes(value, _buffer.Slice(_position, length));
    }

    /// <summary>Bytes as they are (a length-delimited field's length must be written before them).</summary>
    public void Raw(ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(_buffer[_position..]);
        _position += bytes.Length;
    }

    /// <summary>A string field, left out when empty (proto3).</summary>
    public void StringField(byte tag, string value)
    {
        if (value.Length != 0)
        {
            Tag(tag);
            String(value);
        }
    }

    /// <summary>An unsigned varint field, left out when zero (proto3).</summary>
    public void VarintField(byte tag, ulong value)
    {
        if (value != 0)
        {
            Tag(tag);
            Varint(value);
        }
    }

    /// <summary>An enum field, left out when zero (proto3).</summary>
    public void EnumField(byte tag, int value)
    {
        if (value != 0)
        {
            Tag(tag);
            Int32(value);
        }
    }

    /// <summary>Moves past <paramref name="bytes"/> the caller wrote into the span itself.</summary>
    public void Skip(int bytes) => _position += bytes;

    /// <summary>The size of an unsigned varint.</summary>
    public static int VarintSize(ulong value) => value < 0x80 ? 1 : (70 - System.Numerics.BitOperations.LeadingZeroCount(value)) / 7;

    /// <summary>The size of an unsigned varint.</summary>
    public static int VarintSize(uint value) => value < 0x80 ? 1 : (38 - System.Numerics.BitOperations.LeadingZeroCount(value)) / 7;

    /// <summary>The size of an enum or int32 (ten bytes when negative).</summary>
    public static int Int32Size(int value) => value < 0 ? 10 : VarintSize((uint)value);

    /// <summary>The size of <see cref="StringField"/>'s field.</summary>
    public static int StringFieldSize(string value) => value.Length == 0 ? 0 : 1 + StringSize(value);

    /// <summary>The size of <see cref="VarintField"/>'s field.</summary>
    public static int VarintFieldSize(ulong value) => value == 0 ? 0 : 1 + VarintSize(value);

    /// <summary>The size of <see cref="EnumField"/>'s field.</summary>
    public static int EnumFieldSize(int value) => value == 0 ? 0 : 1 + Int32Size(value);

    /// <summary>The size of a string's length and UTF-8 bytes.</summary>
    public static int StringSize(string value)
    {
        int length = Utf8.GetByteCount(value);
        return VarintSize((uint)length) + length;
    }
}
