using System.Buffers.Binary;
using System.Text;
using Google.Protobuf.Collections;

namespace FlowSec.Relay.Storage;

/// <summary>
/// Writes ClickHouse's RowBinary format into a growing buffer: little-endian numbers, strings as
/// LEB128 length + bytes, arrays as LEB128 count + items. One writer holds one INSERT body.
/// </summary>
public sealed class RowBinaryWriter
{
    private const int MaxOneByteLengthChars = 127 / 3;
    private byte[] _buffer;
    private int _length;

    /// <summary>Creates a writer with an initial capacity in bytes.</summary>
    public RowBinaryWriter(int initialCapacity = 64 * 1024) => _buffer = new byte[Math.Max(16, initialCapacity)];

    /// <summary>Bytes written so far.</summary>
    public int Length => _length;

    /// <summary>Size of the buffer, which grows by doubling and is kept across <see cref="Clear"/>.</summary>
    public int Capacity => _buffer.Length;

    /// <summary>The buffer itself (valid up to <see cref="Length"/>), for readers inside the relay such as <see cref="NativeBlock"/>.</summary>
    internal byte[] Buffer => _buffer;

    /// <summary>The body written so far.</summary>
    public ReadOnlyMemory<byte> WrittenMemory => _buffer.AsMemory(0, _length);

    /// <summary>Forgets what was written after the first <paramref name="length"/> bytes (a value that failed half-way).</summary>
    internal void Truncate(int length) => _length = Math.Clamp(length, 0, _length);

    /// <summary>Forgets what was written, keeping the buffer.</summary>
    public void Clear() => _length = 0;

    /// <summary>Takes out <paramref name="count"/> bytes written from <paramref name="start"/> on; what followed them moves up.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside what was written.</exception>
    internal void RemoveRange(int start, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + count, _length);
        _buffer.AsSpan(start + count, _length - start - count).CopyTo(_buffer.AsSpan(start));
        _length -= count;
    }

    /// <summary>UInt8 (also Bool-like flags).</summary>
    public void WriteUInt8(byte value) => Reserve(1)[0] = value;

    /// <summary>Int8.</summary>
    public void WriteInt8(sbyte value) => Reserve(1)[0] = unchecked((byte)value);

    /// <summary>UInt16.</summary>
    public void WriteUInt16(ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(Reserve(2), value);

    /// <summary>Int16.</summary>
    public void WriteInt16(short value) => BinaryPrimitives.WriteInt16LittleEndian(Reserve(2), value);

    /// <summary>UInt32.</summary>
    public void WriteUInt32(uint value) => BinaryPrimitives.WriteUInt32LittleEndian(Reserve(4), value);

    /// <summary>Int32.</summary>
    public void WriteInt32(int value) => BinaryPrimitives.WriteInt32LittleEndian(Reserve(4), value);

    /// <summary>UInt64.</summary>
    public void WriteUInt64(ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(Reserve(8), value);

    /// <summary>Int64.</summary>
    public void WriteInt64(long value) => BinaryPrimitives.WriteInt64LittleEndian(Reserve(8), value);

    /// <summary>Enum8: the enum's Int8 value (the column definition maps it to a name).</summary>
    public void WriteEnum8(sbyte value) => WriteInt8(value);

    /// <summary>DateTime: seconds since the Unix epoch as UInt32.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Before 1970 or after 2106.</exception>
    public void WriteDateTime(DateTimeOffset value)
    {
        var seconds = value.ToUnixTimeSeconds();
        if (seconds is < 0 or > uint.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(value), value, "DateTime holds 1970 to 2106.");
        }

        WriteUInt32((uint)seconds);
    }

    /// <summary>String: LEB128 byte length, then the UTF-8 bytes.</summary>
    public void WriteString(string value)
    {
        // Most values (names, namespaces, states) are short: encode them in one pass instead of
        // counting the bytes first. A UTF-16 unit takes at most 3 UTF-8 bytes (a surrogate pair 4 for
        // 2 units, an unpaired surrogate the 3 of U+FFFD), so up to 42 units always fit in 127 bytes,
        // a one-byte length.
        if (value.Length <= MaxOneByteLengthChars)
        {
            if (_buffer.Length - _length < 1 + MaxOneByteLengthChars * 3)
            {
                Grow(1 + MaxOneByteLengthChars * 3);
            }

            var written = Encoding.UTF8.GetBytes(value, _buffer.AsSpan(_length + 1));
            _buffer[_length] = (byte)written;
            _length += 1 + written;
            return;
        }

        var byteCount = Encoding.UTF8.GetByteCount(value);
        WriteVarUInt((ulong)byteCount);
        Encoding.UTF8.GetBytes(value, Reserve(byteCount));
    }

    /// <summary>String from raw bytes: LEB128 length, then the bytes.</summary>
    public void WriteString(ReadOnlySpan<byte> value)
    {
        WriteVarUInt((ulong)value.Length);
        value.CopyTo(Reserve(value.Length));
    }

    /// <summary>Bytes as they are, already encoded (e.g. a column's values copied from another writer).</summary>
    public void WriteRaw(ReadOnlySpan<byte> bytes) => bytes.CopyTo(Reserve(bytes.Length));

    /// <summary>FixedString(N): exactly <paramref name="size"/> bytes, zero-padded on the right.</summary>
    /// <exception cref="ArgumentException">The value is longer than the column.</exception>
    public void WriteFixedString(ReadOnlySpan<byte> value, int size)
    {
        if (value.Length > size)
        {
            throw new ArgumentException($"{value.Length} bytes do not fit FixedString({size}).", nameof(value));
        }

        var span = Reserve(size);
        value.CopyTo(span);
        span[value.Length..].Clear();
    }

    /// <summary>Array(T): LEB128 count, then each item written by <paramref name="writeItem"/>.</summary>
    public void WriteArray<T>(ICollection<T> items, Action<RowBinaryWriter, T> writeItem)
    {
        WriteVarUInt((ulong)items.Count);
        foreach (var item in items)
        {
            writeItem(this, item);
        }
    }

    /// <summary>Array(T) of a protobuf repeated field: as <see cref="WriteArray{T}(ICollection{T}, Action{RowBinaryWriter, T})"/>, by index, without an enumerator to allocate.</summary>
    public void WriteArray<T>(RepeatedField<T> items, Action<RowBinaryWriter, T> writeItem)
    {
        WriteVarUInt((ulong)items.Count);
        for (var i = 0; i < items.Count; i++)
        {
            writeItem(this, items[i]);
        }
    }

    /// <summary>Unsigned LEB128, ClickHouse's VarUInt (lengths and counts).</summary>
    public void WriteVarUInt(ulong value)
    {
        while (value >= 0x80)
        {
            WriteUInt8((byte)(value | 0x80));
            value >>= 7;
        }

        WriteUInt8((byte)value);
    }

    /// <summary>Reserves <paramref name="count"/> bytes at the end for the caller to fill (e.g. a String body whose length was written first).</summary>
    internal Span<byte> Reserve(int count)
    {
        if (_buffer.Length - _length < count)
        {
            Grow(count);
        }

        var span = _buffer.AsSpan(_length, count);
        _length += count;
        return span;
    }

    /// <summary>Room for at least <paramref name="count"/> bytes after what was written, not yet counted as written: fill what you need, then <see cref="Advance"/> by it.</summary>
    internal Span<byte> Room(int count)
    {
        if (_buffer.Length - _length < count)
        {
            Grow(count);
        }

        return _buffer.AsSpan(_length);
    }

    /// <summary>Counts <paramref name="count"/> bytes filled in <see cref="Room"/> as written.</summary>
    /// <exception cref="ArgumentOutOfRangeException">More than the room there is.</exception>
    internal void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)count, (uint)(_buffer.Length - _length), nameof(count));
        _length += count;
    }

    private void Grow(int count) => Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + count));
}
