using System.Buffers;
using System.Buffers.Binary;
using FlowSec.Api.V1;

namespace FlowSec.Relay.Storage;

/// <summary>
/// The rows waiting for one table, held column by column and sent as one block of ClickHouse's
/// <c>Native</c> format (<c>INSERT … FORMAT Native</c>, which 18.16's HTTP interface accepts).
/// Measured on this kind of machine, the server parses a Native flow row in about a third of the
/// CPU a RowBinary row costs it, and rows that arrive already in the table's sort order spare it
/// the sort and the permutation of every column, the largest part of its insert work after
/// compression; so the block is sent sorted by <see cref="EventTable.SortKey"/>.
/// </summary>
/// <remarks>
/// Each column keeps its values as the table's column writers produce them (RowBinary), which is
/// already Native's encoding for numbers, FixedString and String; an Array's RowBinary count is
/// turned into Native's separate offsets column when the block is sent. Variable-width columns
/// keep where each row starts, so rows can be sent in sorted order without being re-encoded.
/// Native's block header carries each column's type; LowCardinality(String) goes as String,
/// which is how 18.x creates those columns, and which newer servers convert on insert.
/// </remarks>
internal sealed class NativeBlock
{
    private const int ChunkSize = 256 * 1024;

    private readonly EventTable _table;
    private readonly Column[] _columns;
    private readonly SortPart[]? _sortKey;
    private int[] _order = [];
    private long _bytes;

    /// <summary>An empty block for <paramref name="table"/>'s <see cref="EventTable.InsertColumnNames"/>.</summary>
    /// <exception cref="NotSupportedException">A column's type has no Native encoding here (e.g. Nullable).</exception>
    public NativeBlock(EventTable table)
    {
        _table = table;
        _columns = table.Columns.Select(c => new Column(c.Name, c.Type)).Append(new Column(EventTable.BatchIdColumn, "UInt64")).ToArray();
        _sortKey = SortPart.Resolve(table.SortKey, _columns);
    }

    /// <summary>Rows held.</summary>
    public int Rows { get; private set; }

    /// <summary>Memory the rows hold: their encoded values plus the row starts of variable-width columns.</summary>
    public long Bytes => _bytes;

    /// <summary>Whether rows are sent sorted by the table's sort key (false when the key has an expression this class does not evaluate).</summary>
    public bool SortsRows => _sortKey is not null;

    /// <summary>Appends one event as a row, tagged with the batch it came in.</summary>
    public void Append(Event e, ulong batchId)
    {
        var columns = _table.Columns;
        var row = Rows;
        long added = 0;
        for (var i = 0; i < columns.Count; i++)
        {
            var column = _columns[i];
            var before = column.Data.Length;
            column.BeginRow(row);
            columns[i].Write(column.Data, e);
            column.EndRow(row, before);
            added += column.Data.Length - before + (column.Kind == ColumnKind.Fixed ? 0 : sizeof(int));
        }

        _columns[^1].Data.WriteUInt64(batchId);
        _bytes += added + sizeof(ulong);
        Rows = row + 1;
    }

    /// <summary>The exact size of the Native block <see cref="WriteToAsync"/> writes.</summary>
    public long EncodedLength()
    {
        long length = VarUIntSize((ulong)_columns.Length) + VarUIntSize((ulong)Rows);
        foreach (var column in _columns)
        {
            length += StringSize(column.Name) + StringSize(column.WireType) + column.EncodedLength(Rows);
        }

        return length;
    }

    /// <summary>
    /// Writes the block: column count, row count, then each column's name, type and values, rows in
    /// sort-key order. Can be called again (a retry) until <see cref="Clear"/>.
    /// </summary>
    public async Task WriteToAsync(Stream stream, CancellationToken cancellationToken)
    {
        var order = SortedOrder();
        var sink = new Sink(stream, ArrayPool<byte>.Shared.Rent(ChunkSize));
        try
        {
            sink.WriteVarUInt((ulong)_columns.Length);
            sink.WriteVarUInt((ulong)Rows);
            foreach (var column in _columns)
            {
                await sink.WriteStringAsync(column.Name, cancellationToken);
                await sink.WriteStringAsync(column.WireType, cancellationToken);
                await column.WriteValuesAsync(sink, Rows, order, cancellationToken);
            }

            await sink.FlushAsync(cancellationToken);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(sink.Buffer);
        }
    }

    /// <summary>Forgets the rows. Buffers are kept for the next rows, unless a burst grew them far beyond what they held.</summary>
    public void Clear()
    {
        foreach (var column in _columns)
        {
            column.Clear();
        }

        if (_order.Length > 64 * 1024 && _order.Length > 4 * Rows)
        {
            _order = [];
        }

        Rows = 0;
        _bytes = 0;
    }

    /// <summary>The rows in sort-key order (ties in arrival order), or null when they are in order already or no key is known.</summary>
    internal int[]? SortedOrder()
    {
        if (_sortKey is null || Rows < 2)
        {
            return null;
        }

        var inOrder = true;
        for (var i = 1; i < Rows && inOrder; i++)
        {
            inOrder = Compare(i - 1, i) <= 0;
        }

        if (inOrder)
        {
            return null;
        }

        if (_order.Length < Rows)
        {
            _order = new int[Math.Max(Rows, _order.Length * 2)];
        }

        var order = _order.AsSpan(0, Rows);
        for (var i = 0; i < order.Length; i++)
        {
            order[i] = i;
        }

        // The row number breaks ties, so the sort is stable like the server's.
        order.Sort((a, b) => Compare(a, b) is var c and not 0 ? c : a.CompareTo(b));
        return _order;
    }

    private int Compare(int a, int b)
    {
        foreach (var part in _sortKey!)
        {
            var c = part.Compare(a, b);
            if (c != 0)
            {
                return c;
            }
        }

        return 0;
    }

    private static int VarUIntSize(ulong value)
    {
        var size = 1;
        while (value >= 0x80)
        {
            value >>= 7;
            size++;
        }

        return size;
    }

    // Names and types are ASCII.
    private static long StringSize(string s) => VarUIntSize((ulong)s.Length) + s.Length;

    private static (ulong Value, int Size) ReadVarUInt(ReadOnlySpan<byte> data)
    {
        ulong value = 0;
        for (var i = 0; i < 10; i++)
        {
            var b = data[i];
            value |= (ulong)(b & 0x7f) << (7 * i);
            if (b < 0x80)
            {
                return (value, i + 1);
            }
        }

        throw new InvalidDataException("VarUInt longer than 10 bytes.");
    }

    private enum ColumnKind
    {
        Fixed,
        String,
        Array,
    }

    /// <summary>One column's values, and where each row starts for variable-width kinds.</summary>
    private sealed class Column
    {
        private const int InitialCapacity = 4 * 1024;
        private int[] _starts = [];
        private long _countBytes; // Array: the RowBinary counts, which Native sends as offsets instead
        private int _rows;

        public Column(string name, string type)
        {
            Name = name;
            // 18.x creates LowCardinality(String) columns as String (see EventTable.CreateSql); newer
            // servers convert String to LowCardinality on a Native insert.
            WireType = type.Replace("LowCardinality(String)", "String", StringComparison.Ordinal);
            if (WireType.StartsWith("Array(", StringComparison.Ordinal) && WireType.EndsWith(')'))
            {
                var item = WireType["Array(".Length..^1];
                if (item.StartsWith("Array(", StringComparison.Ordinal) || (item != "String" && FixedWidth(item) is null))
                {
                    throw new NotSupportedException($"Column {name}: the Native writer has no encoding for {type}.");
                }

                Kind = ColumnKind.Array;
            }
            else if (WireType == "String")
            {
                Kind = ColumnKind.String;
            }
            else
            {
                Width = FixedWidth(WireType) ?? throw new NotSupportedException($"Column {name}: the Native writer has no encoding for {type}.");
                Kind = ColumnKind.Fixed;
            }
        }

        public string Name { get; }

        public string WireType { get; }

        public ColumnKind Kind { get; }

        /// <summary>Bytes per value of a fixed-width column.</summary>
        public int Width { get; }

        public RowBinaryWriter Data { get; private set; } = new(InitialCapacity);

        public void BeginRow(int row)
        {
            if (Kind == ColumnKind.Fixed)
            {
                return;
            }

            if (row == _starts.Length)
            {
                Array.Resize(ref _starts, Math.Max(1024, _starts.Length * 2));
            }

            _starts[row] = Data.Length;
        }

        public void EndRow(int row, int before)
        {
            switch (Kind)
            {
                case ColumnKind.Fixed when Data.Length - before != Width:
                    // A writer that disagrees with its column's type would shift every later value.
                    throw new InvalidOperationException($"Column {Name} ({WireType}) was written with {Data.Length - before} bytes.");
                case ColumnKind.Array:
                    _countBytes += ReadVarUInt(Data.Buffer.AsSpan(_starts[row], Data.Length - _starts[row])).Size;
                    break;
            }

            _rows = row + 1;
        }

        /// <summary>Where row <paramref name="row"/>'s value starts and ends in <see cref="Data"/>.</summary>
        public (int Start, int End) Range(int row) =>
            Kind == ColumnKind.Fixed ? (row * Width, (row + 1) * Width) : (_starts[row], row + 1 < _rows ? _starts[row + 1] : Data.Length);

        public long EncodedLength(int rows) => Kind == ColumnKind.Array ? (long)rows * sizeof(ulong) + Data.Length - _countBytes : Data.Length;

        public async Task WriteValuesAsync(Sink sink, int rows, int[]? order, CancellationToken cancellationToken)
        {
            var data = Data.Buffer;
            if (Kind != ColumnKind.Array && order is null)
            {
                await sink.WriteAsync(Data.WrittenMemory, cancellationToken); // already Native's encoding
                return;
            }

            if (Kind == ColumnKind.Array)
            {
                // Native: every row's end offset into the items (UInt64), then all items.
                ulong end = 0;
                for (var i = 0; i < rows; i++)
                {
                    var (start, stop) = Range(order?[i] ?? i);
                    end += ReadVarUInt(data.AsSpan(start, stop - start)).Value;
                    await sink.WriteUInt64Async(end, cancellationToken);
                }
            }

            for (var i = 0; i < rows; i++)
            {
                var (start, stop) = Range(order?[i] ?? i);
                if (Kind == ColumnKind.Array)
                {
                    start += ReadVarUInt(data.AsSpan(start, stop - start)).Size;
                }

                await sink.WriteAsync(data.AsMemory(start, stop - start), cancellationToken);
            }
        }

        public void Clear()
        {
            // A buffer far larger than what it carried was grown by a burst: let it go rather than
            // pin it, while a steady load keeps reusing its buffer.
            if (Data.Capacity > 1024 * 1024 && Data.Capacity > 4 * Data.Length)
            {
                Data = new RowBinaryWriter(Math.Max(InitialCapacity, Data.Length));
            }

            if (_starts.Length > 64 * 1024 && _starts.Length > 4 * _rows)
            {
                _starts = [];
            }

            Data.Clear();
            _countBytes = 0;
            _rows = 0;
        }

        private static int? FixedWidth(string type) => type switch
        {
            "UInt8" or "Int8" => 1,
            "UInt16" or "Int16" or "Date" => 2,
            "UInt32" or "Int32" or "Float32" => 4,
            "UInt64" or "Int64" or "Float64" => 8,
            "UUID" => 16,
            _ when type.StartsWith("Enum8(", StringComparison.Ordinal) => 1,
            _ when type.StartsWith("Enum16(", StringComparison.Ordinal) => 2,
            _ when type == "DateTime" || type.StartsWith("DateTime(", StringComparison.Ordinal) => 4,
            _ when type.StartsWith("FixedString(", StringComparison.Ordinal) && type.EndsWith(')') &&
                   int.TryParse(type["FixedString(".Length..^1], System.Globalization.CultureInfo.InvariantCulture, out var n) => n,
            _ => null,
        };
    }

    /// <summary>One expression of the sort key, compared the way ClickHouse orders its values.</summary>
    private sealed class SortPart(Column column, SortPart.Order order)
    {
        public enum Order
        {
            Unsigned,
            Signed,
            Bytes,
            Hour,
        }

        /// <summary>The key's parts, or null when one of them is an expression this class does not evaluate (the server then sorts).</summary>
        public static SortPart[]? Resolve(IReadOnlyList<string> sortKey, Column[] columns)
        {
            var parts = new List<SortPart>();
            foreach (var expression in sortKey)
            {
                var hour = expression.StartsWith("toStartOfHour(", StringComparison.Ordinal) && expression.EndsWith(')');
                var name = hour ? expression["toStartOfHour(".Length..^1] : expression;
                var column = columns.FirstOrDefault(c => c.Name == name);
                if (column is null)
                {
                    return null;
                }

                Order? kind = (hour, column.Kind, column.WireType) switch
                {
                    // toStartOfHour depends on the column's time zone; only UTC is a plain division.
                    (true, ColumnKind.Fixed, "DateTime('UTC')") => Order.Hour,
                    (true, _, _) => null,
                    (_, ColumnKind.String, _) => Order.Bytes,
                    (_, ColumnKind.Fixed, var t) when t.StartsWith("FixedString(", StringComparison.Ordinal) => Order.Bytes,
                    (_, ColumnKind.Fixed, var t) when t.StartsWith("UInt", StringComparison.Ordinal) || t.StartsWith("DateTime", StringComparison.Ordinal) => Order.Unsigned,
                    (_, ColumnKind.Fixed, var t) when t.StartsWith("Int", StringComparison.Ordinal) || t.StartsWith("Enum", StringComparison.Ordinal) => Order.Signed,
                    _ => null,
                };
                if (kind is null)
                {
                    return null;
                }

                parts.Add(new SortPart(column, kind.Value));
            }

            return [.. parts];
        }

        public int Compare(int a, int b)
        {
            var data = column.Data.Buffer;
            switch (order)
            {
                case Order.Hour:
                    return (BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(a * 4)) / 3600).CompareTo(BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(b * 4)) / 3600);
                case Order.Unsigned:
                    return Unsigned(data, a).CompareTo(Unsigned(data, b));
                case Order.Signed:
                    return Signed(data, a).CompareTo(Signed(data, b));
                default:
                    return Value(data, a).SequenceCompareTo(Value(data, b));
            }
        }

        private ReadOnlySpan<byte> Value(byte[] data, int row)
        {
            var (start, end) = column.Range(row);
            var value = data.AsSpan(start, end - start);
            return column.Kind == ColumnKind.String ? value[ReadVarUInt(value).Size..] : value;
        }

        private ulong Unsigned(byte[] data, int row) => column.Width switch
        {
            1 => data[row],
            2 => BinaryPrimitives.ReadUInt16LittleEndian(data.AsSpan(row * 2)),
            4 => BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(row * 4)),
            _ => BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(row * 8)),
        };

        private long Signed(byte[] data, int row) => column.Width switch
        {
            1 => (sbyte)data[row],
            2 => BinaryPrimitives.ReadInt16LittleEndian(data.AsSpan(row * 2)),
            4 => BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(row * 4)),
            _ => BinaryPrimitives.ReadInt64LittleEndian(data.AsSpan(row * 8)),
        };
    }

    /// <summary>Buffers writes into chunks, so thousands of small values cost few stream writes.</summary>
    private sealed class Sink(Stream stream, byte[] buffer)
    {
        private int _length;

        public byte[] Buffer => buffer;

        public void WriteVarUInt(ulong value)
        {
            while (value >= 0x80)
            {
                buffer[_length++] = (byte)(value | 0x80);
                value >>= 7;
            }

            buffer[_length++] = (byte)value;
        }

        public async ValueTask WriteStringAsync(string ascii, CancellationToken cancellationToken)
        {
            if (buffer.Length - _length < ascii.Length + 10)
            {
                await FlushAsync(cancellationToken);
            }

            WriteVarUInt((ulong)ascii.Length);
            _length += System.Text.Encoding.ASCII.GetBytes(ascii, buffer.AsSpan(_length));
        }

        public ValueTask WriteUInt64Async(ulong value, CancellationToken cancellationToken)
        {
            if (buffer.Length - _length >= sizeof(ulong))
            {
                BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(_length), value);
                _length += sizeof(ulong);
                return ValueTask.CompletedTask;
            }

            return Slow(value, cancellationToken);

            async ValueTask Slow(ulong v, CancellationToken ct)
            {
                await FlushAsync(ct);
                BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(_length), v);
                _length += sizeof(ulong);
            }
        }

        public ValueTask WriteAsync(ReadOnlyMemory<byte> value, CancellationToken cancellationToken)
        {
            if (buffer.Length - _length >= value.Length)
            {
                value.Span.CopyTo(buffer.AsSpan(_length));
                _length += value.Length;
                return ValueTask.CompletedTask;
            }

            return Slow(value, cancellationToken);

            async ValueTask Slow(ReadOnlyMemory<byte> v, CancellationToken ct)
            {
                await FlushAsync(ct);
                if (v.Length >= buffer.Length)
                {
                    await stream.WriteAsync(v, ct);
                    return;
                }

                v.Span.CopyTo(buffer);
                _length = v.Length;
            }
        }

        public async ValueTask FlushAsync(CancellationToken cancellationToken)
        {
            if (_length > 0)
            {
                await stream.WriteAsync(buffer.AsMemory(0, _length), cancellationToken);
                _length = 0;
            }
        }
    }
}
