using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
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
/// keep where each row ends, so rows can be sent in sorted order without being re-encoded.
/// Native's block header carries each column's type; LowCardinality(String) goes as String,
/// which is how 18.x creates those columns, and which newer servers convert on insert.
/// </remarks>
internal sealed class NativeBlock
{
    private const int ChunkSize = 256 * 1024;

    private readonly Action<RowBinaryWriter, Event>[] _writers;
    private readonly Column[] _columns;
    private readonly SortPart[]? _sortKey;
    private readonly int _keyWords;
    private ulong[] _keys = [];
    private int[] _order = [];
    private PackedKey[] _entries = [];
    private long _bytes;

    /// <summary>An empty block for <paramref name="table"/>'s <see cref="EventTable.InsertColumnNames"/>.</summary>
    /// <param name="table">The table.</param>
    /// <param name="sortRows">Whether rows are sent in the table's sort order (else in arrival order).</param>
    /// <exception cref="NotSupportedException">A column's type has no Native encoding here (e.g. Nullable).</exception>
    public NativeBlock(EventTable table, bool sortRows = true)
    {
        Table = table;
        _writers = table.Columns.Select(c => c.Write).ToArray();
        _columns = table.Columns.Select(c => new Column(c.Name, c.Type)).Append(new Column(EventTable.BatchIdColumn, "UInt64")).ToArray();
        _sortKey = sortRows ? SortPart.Resolve(table.SortKey, _columns) : null;
        if (_sortKey is not null)
        {
            _keyWords = _sortKey.Sum(p => p.Words);
        }
    }

    /// <summary>The table whose columns the block holds.</summary>
    public EventTable Table { get; }

    /// <summary>Rows held.</summary>
    public int Rows { get; private set; }

    /// <summary>Memory the rows hold: their encoded values plus the row starts of variable-width columns.</summary>
    public long Bytes => _bytes;

    /// <summary>Whether rows are sent sorted by the table's sort key (false when the key has an expression this class does not evaluate).</summary>
    public bool SortsRows => _sortKey is not null;

    /// <summary>Appends one event as a row, tagged with the batch it came in.</summary>
    public void Append(Event e, ulong batchId) => AppendRow(new EventRow(_writers, e), batchId);

    /// <summary>
    /// Appends one row whose values <paramref name="row"/> writes column by column (in
    /// <see cref="EventTable.Columns"/> order, each as its column writer would), tagged with the batch it came in.
    /// </summary>
    internal void AppendRow<TRow>(scoped in TRow row, ulong batchId)
        where TRow : IRowSource, allows ref struct
    {
        // The bookkeeping around each writer runs about 45 times a flow row, so it stays inline and
        // small: a fixed-width column (most of them) only checks its width, a variable-width one
        // records where its value ended (BeginRow/EndRow calls for every column cost ~0.05 µs a row more).
        var columns = _columns;
        var valueColumns = columns.Length - 1;
        var rowIndex = Rows;
        long added = 0;
        var i = 0;
        try
        {
            for (; i < valueColumns; i++)
            {
                var column = columns[i];
                var data = column.Data;
                var before = data.Length;
                row.Write(i, data);
                var written = data.Length - before;
                if (column.Kind == ColumnKind.Fixed)
                {
                    if (written != column.Width)
                    {
                        // A writer that disagrees with its column's type would shift every later value.
                        throw new InvalidOperationException($"Column {column.Name} ({column.WireType}) was written with {written} bytes.");
                    }

                    added += written;
                    continue;
                }

                column.EndRow(rowIndex, before);
                added += written + sizeof(int);
            }
        }
        catch
        {
            // Half a row would shift every later value of the columns it reached: take it back.
            // Columns before i finished the row; column i did not record it.
            for (var j = 0; j <= i && j < valueColumns; j++)
            {
                columns[j].Truncate(rowIndex, finished: j < i);
            }

            throw;
        }

        columns[^1].Data.WriteUInt64(batchId);
        _bytes += added + sizeof(ulong);
        Rows = rowIndex + 1;
    }

    /// <summary>
    /// Appends <paramref name="rows"/> rows whose values <paramref name="source"/> writes one column
    /// at a time (in <see cref="EventTable.Columns"/> order, each value as its column writer would
    /// encode it), all tagged with the batch they came in. Either every row is appended or none.
    /// </summary>
    /// <remarks>
    /// For a run of decoded rows this costs one call per column instead of one per value: a
    /// fixed-width column takes the run's values as one span, a String column records its row ends
    /// in one loop. Per value, <see cref="AppendRow{TRow}"/>'s dispatch, width check and row-end
    /// bookkeeping were about a quarter of the relay's CPU at ingest.
    /// </remarks>
    /// <exception cref="InvalidOperationException">The source wrote a column with fewer or more values than rows, or with the wrong width.</exception>
    /// <exception cref="NotSupportedException">The table has an Array column (only fixed-width and String columns are written this way).</exception>
    internal void AppendColumns<TSource>(scoped ref TSource source, int rows, ulong batchId)
        where TSource : IColumnSource, allows ref struct
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        if (rows == 0)
        {
            return;
        }

        var columns = _columns;
        var valueColumns = columns.Length - 1;
        var held = Rows;
        long added = 0;
        var i = 0;
        try
        {
            for (; i < valueColumns; i++)
            {
                var column = columns[i];
                var before = column.Data.Length;
                var values = column.Values(held, rows);
                source.WriteColumn(i, ref values);
                values.CheckComplete();
                added += column.Data.Length - before + (column.Kind == ColumnKind.Fixed ? 0 : (long)rows * sizeof(int));
            }
        }
        catch
        {
            // Rows some columns have and others not would shift every later value: take the run back whole.
            for (var j = 0; j <= i && j < valueColumns; j++)
            {
                columns[j].Truncate(held, finished: false);
            }

            throw;
        }

        MemoryMarshal.Cast<byte, ulong>(columns[^1].Data.Reserve(rows * sizeof(ulong))).Fill(batchId);
        _bytes += added + (long)rows * sizeof(ulong);
        Rows = held + rows;
    }

    /// <summary>
    /// Appends every row of <paramref name="rows"/> (a block of the same table, e.g. one sensor
    /// batch's rows decoded at ingest) after the rows held, in their order: each column's values
    /// are copied as they are, and its row ends moved by what this column held before.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="rows"/> belongs to another table.</exception>
    public void AppendBlock(NativeBlock rows)
    {
        if (!ReferenceEquals(rows.Table, Table))
        {
            throw new ArgumentException($"Rows of table {rows.Table.Name} cannot join a block of {Table.Name}.", nameof(rows));
        }

        if (rows.Rows == 0)
        {
            return;
        }

        for (var i = 0; i < _columns.Length; i++)
        {
            _columns[i].AppendColumn(Rows, rows._columns[i], rows.Rows);
        }

        Rows += rows.Rows;
        _bytes += rows._bytes;
    }

    /// <summary>
    /// Takes out <paramref name="count"/> rows from row <paramref name="start"/> on (arrival order,
    /// e.g. one sensor batch's rows, which are appended together); the rows after them move up.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The rows are not inside the block.</exception>
    public void RemoveRows(int start, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + count, Rows);
        if (count == 0)
        {
            return;
        }

        foreach (var column in _columns)
        {
            _bytes -= column.RemoveRows(Rows, start, count);
        }

        Rows -= count;
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
            column.Clear(Rows);
        }

        if (_order.Length > 64 * 1024 && _order.Length > 4 * Rows)
        {
            _order = [];
            _keys = [];
            _entries = [];
        }

        Rows = 0;
        _bytes = 0;
    }

    /// <summary>The rows in sort-key order (ties in arrival order), or null when they are in order already or no key is known.</summary>
    /// <remarks>
    /// Sorting must cost the relay less than it saves the server (about 1–2 µs a row here), so each
    /// row's key is first laid out as unsigned 64-bit words that order the same way (numbers as
    /// they are, FixedString as big-endian words, a String as the rank of its value among the
    /// block's distinct values), and rows are sorted comparing words only. Comparing the strings
    /// themselves (a flow's namespace and pod) cost about 1 µs a row.
    /// </remarks>
    internal int[]? SortedOrder()
    {
        if (_sortKey is null || Rows < 2)
        {
            return null;
        }

        var words = _keyWords;
        if (_keys.Length < Rows * words)
        {
            _keys = new ulong[Math.Max(Rows, _keys.Length / words * 2) * words];
        }

        var word = 0;
        foreach (var part in _sortKey)
        {
            part.FillKeys(_keys, word, words, Rows);
            word += part.Words;
        }

        if (_order.Length < Rows)
        {
            _order = new int[Math.Max(Rows, _order.Length * 2)];
        }

        var order = _order.AsSpan(0, Rows);
        if (SortPacked(order, out var packedInOrder))
        {
            return packedInOrder ? null : _order;
        }

        var comparer = new RowComparer(_keys, words);
        var inOrder = true;
        for (var i = 1; i < Rows && inOrder; i++)
        {
            inOrder = comparer.Compare(i - 1, i) <= 0;
        }

        if (inOrder)
        {
            return null;
        }

        for (var i = 0; i < order.Length; i++)
        {
            order[i] = i;
        }

        order.Sort(comparer);
        return _order;
    }

    /// <summary>
    /// Sorts by the key words packed into one 128-bit number, when they fit: a word's values minus
    /// the block's smallest need only as many bits as their range (the hours of a block, the ranks of
    /// its namespaces and pods, the varying low half of its IPv4-mapped addresses, its span of
    /// time_ns), and the words put side by side in key order order rows exactly as the words did.
    /// Sorting structs that compare inline costs a fraction of the general comparer's interface call
    /// and loop over every word (the flows key: 8 words, about 100 bits of range in a block).
    /// </summary>
    /// <returns>False when the ranges need more than 128 bits (the caller sorts the words as they are).</returns>
    private bool SortPacked(Span<int> order, out bool inOrder)
    {
        inOrder = false;
        var words = _keyWords;
        var rows = Rows;
        var keys = _keys;
        Span<ulong> min = stackalloc ulong[words];
        Span<int> bits = stackalloc int[words];
        var total = 0;
        for (var w = 0; w < words; w++)
        {
            ulong lo = ulong.MaxValue, hi = 0;
            for (var at = w; at < rows * words; at += words)
            {
                lo = Math.Min(lo, keys[at]);
                hi = Math.Max(hi, keys[at]);
            }

            min[w] = lo;
            bits[w] = 64 - System.Numerics.BitOperations.LeadingZeroCount(hi - lo);
            total += bits[w];
        }

        if (total > 128)
        {
            return false;
        }

        if (_entries.Length < rows)
        {
            _entries = new PackedKey[Math.Max(rows, _entries.Length * 2)];
        }

        var entries = _entries.AsSpan(0, rows);
        for (var r = 0; r < rows; r++)
        {
            UInt128 key = 0;
            var row = keys.AsSpan(r * words, words);
            for (var w = 0; w < words; w++)
            {
                key = (key << bits[w]) | (row[w] - min[w]); // a shift by 0 for a word that never varies
            }

            entries[r] = new PackedKey(key, r);
        }

        inOrder = true;
        for (var r = 1; r < rows && inOrder; r++)
        {
            inOrder = entries[r - 1].CompareTo(entries[r]) <= 0;
        }

        if (inOrder)
        {
            return true;
        }

        entries.Sort();
        for (var r = 0; r < rows; r++)
        {
            order[r] = entries[r].Row;
        }

        return true;
    }

    /// <summary>A row's packed sort key, then the row number, so the sort is stable like the server's.</summary>
    private readonly record struct PackedKey(UInt128 Key, int Row) : IComparable<PackedKey>
    {
        public int CompareTo(PackedKey other) => Key != other.Key ? (Key < other.Key ? -1 : 1) : Row.CompareTo(other.Row);
    }

    /// <summary>Orders rows by their key words; the row number breaks ties, so the sort is stable like the server's.</summary>
    private readonly struct RowComparer(ulong[] keys, int words) : IComparer<int>
    {
        public int Compare(int a, int b)
        {
            var ka = keys.AsSpan(a * words, words);
            var kb = keys.AsSpan(b * words, words);
            for (var i = 0; i < ka.Length; i++)
            {
                if (ka[i] != kb[i])
                {
                    return ka[i] < kb[i] ? -1 : 1;
                }
            }

            return a.CompareTo(b);
        }
    }

    /// <summary>
    /// One column's values for a run of rows appended by <see cref="AppendColumns{TSource}"/>: a
    /// fixed-width column is filled through one span of all the run's values, a String column value
    /// by value in row order.
    /// </summary>
    internal ref struct ColumnValues
    {
        private readonly string _name;
        private readonly string _wireType;
        private readonly RowBinaryWriter _data;
        private readonly int _width; // fixed-width columns; 0 for String
        private readonly Span<int> _ends; // String: where each row of the run ends in the column's data
        private int _written;

        /// <summary>A run of <paramref name="rows"/> values of a fixed-width column (<paramref name="width"/> &gt; 0) or of a String column (its row ends to fill in <paramref name="ends"/>).</summary>
        internal ColumnValues(string name, string wireType, RowBinaryWriter data, int width, Span<int> ends, int rows)
        {
            _name = name;
            _wireType = wireType;
            _data = data;
            _width = width;
            _ends = ends;
            Rows = rows;
        }

        /// <summary>Rows in the run: how many values the column takes.</summary>
        public int Rows { get; }

        /// <summary>The column's name (for messages).</summary>
        public readonly string Name => _name;

        /// <summary>
        /// Room for all the run's values of a fixed-width column whose values are <typeparamref name="T"/>
        /// (its width must be <typeparamref name="T"/>'s size); the caller stores every one of them.
        /// </summary>
        /// <exception cref="InvalidOperationException">The column is not fixed-width with values of that size, or was reserved already.</exception>
        public Span<T> Fixed<T>()
            where T : unmanaged => MemoryMarshal.Cast<byte, T>(Fixed(System.Runtime.CompilerServices.Unsafe.SizeOf<T>()));

        /// <summary>Room for all the run's values of a fixed-width column of <paramref name="width"/> bytes a value (row r at r × width); the caller fills all of it.</summary>
        /// <exception cref="InvalidOperationException">The column is not fixed-width with that width, or was reserved already.</exception>
        public Span<byte> Fixed(int width)
        {
            if (_width != width || _written != 0)
            {
                throw new InvalidOperationException($"Column {_name} ({_wireType}) cannot take {Rows} values of {width} bytes here.");
            }

            _written = Rows;
            return _data.Reserve(Rows * width);
        }

        /// <summary>Appends the next row's String value.</summary>
        public void String(ReadOnlySpan<byte> value) => value.CopyTo(String(value.Length));

        /// <summary>Appends the next row's String value: the <paramref name="length"/> bytes at <paramref name="start"/> of <paramref name="source"/>.</summary>
        /// <remarks>
        /// Most values (names, pods, states) are shorter than 16 bytes: when <paramref name="source"/>
        /// has 16 bytes from <paramref name="start"/> on, such a value is copied as one 16-byte load and
        /// store (the bytes past it land in room the next value overwrites) instead of a Memmove call.
        /// </remarks>
        public void String(ReadOnlySpan<byte> source, int start, int length)
        {
            if (length < Vector128<byte>.Count && source.Length - start >= Vector128<byte>.Count)
            {
                var room = _data.Room(1 + Vector128<byte>.Count);
                room[0] = (byte)length;
                Vector128.Create<byte>(source.Slice(start, Vector128<byte>.Count)).CopyTo(room[1..]);
                _data.Advance(1 + length);
                _ends[_written++] = _data.Length;
                return;
            }

            String(source.Slice(start, length));
        }

        /// <summary>Appends the next row's String value of <paramref name="length"/> bytes: writes its length and returns the room for its bytes, which the caller fills.</summary>
        /// <exception cref="IndexOutOfRangeException">Every row of the run has its value already.</exception>
        public Span<byte> String(int length)
        {
            var data = _data;
            Span<byte> room;
            if (length < 0x80)
            {
                room = data.Reserve(1 + length);
                room[0] = (byte)length; // the one-byte VarUInt of almost every value
                room = room[1..];
            }
            else
            {
                data.WriteVarUInt((ulong)length);
                room = data.Reserve(length);
            }

            _ends[_written++] = data.Length; // a String column's ends span the run: a value too many throws here
            return room;
        }

        /// <summary>Throws unless every row of the run got its value.</summary>
        internal readonly void CheckComplete()
        {
            if (_written != Rows)
            {
                throw new InvalidOperationException($"Column {_name} got {_written} of {Rows} values.");
            }
        }
    }

    /// <summary>An event written through the table's column writers.</summary>
    private readonly struct EventRow(Action<RowBinaryWriter, Event>[] writers, Event e) : IRowSource
    {
        public void Write(int column, RowBinaryWriter data) => writers[column](data, e);
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
        private int[] _ends = []; // variable-width kinds: where each row's value ends in Data (the next one starts there)
        private long _countBytes; // Array: the RowBinary counts, which Native sends as offsets instead

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

        /// <summary>Records where row <paramref name="row"/> of a variable-width column ends (its writer wrote from <paramref name="start"/> on).</summary>
        public void EndRow(int row, int start)
        {
            if (row == _ends.Length)
            {
                Array.Resize(ref _ends, Math.Max(1024, _ends.Length * 2));
            }

            _ends[row] = Data.Length;
            if (Kind == ColumnKind.Array)
            {
                var count = Data.Buffer[start];
                _countBytes += count < 0x80 ? 1 : ReadVarUInt(Data.Buffer.AsSpan(start, Data.Length - start)).Size;
            }
        }

        /// <summary>Appends <paramref name="rows"/> rows of the same column of another block after this column's <paramref name="held"/> rows.</summary>
        public void AppendColumn(int held, Column other, int rows)
        {
            var offset = Data.Length;
            Data.WriteRaw(other.Data.Buffer.AsSpan(0, other.Data.Length));
            if (Kind == ColumnKind.Fixed)
            {
                return;
            }

            var ends = Ends(held, rows);
            other._ends.AsSpan(0, rows).CopyTo(ends);
            for (var r = 0; r < ends.Length; r++)
            {
                ends[r] += offset;
            }

            _countBytes += other._countBytes;
        }

        /// <summary>The column's values of a run of <paramref name="rows"/> rows after the <paramref name="held"/> rows held, for <see cref="AppendColumns{TSource}"/>.</summary>
        public ColumnValues Values(int held, int rows) => Kind switch
        {
            ColumnKind.Fixed => new ColumnValues(Name, WireType, Data, Width, default, rows),
            ColumnKind.String => new ColumnValues(Name, WireType, Data, 0, Ends(held, rows), rows),
            _ => throw new NotSupportedException($"Column {Name} ({WireType}): Array columns are appended row by row only."),
        };

        /// <summary>The row ends of rows <paramref name="held"/> to <paramref name="held"/> + <paramref name="rows"/> of a variable-width column, to fill (grown to hold them).</summary>
        public Span<int> Ends(int held, int rows)
        {
            if (_ends.Length < held + rows)
            {
                Array.Resize(ref _ends, Math.Max(held + rows, Math.Max(1024, _ends.Length * 2)));
            }

            return _ends.AsSpan(held, rows);
        }

        /// <summary>Where row <paramref name="row"/>'s value starts and ends in <see cref="Data"/>.</summary>
        public (int Start, int End) Range(int row) =>
            Kind == ColumnKind.Fixed ? (row * Width, (row + 1) * Width) : (row == 0 ? 0 : _ends[row - 1], _ends[row]);

        /// <summary>
        /// Drops whatever was written from row <paramref name="row"/> on (a row that failed half-way);
        /// <paramref name="finished"/>: whether this column's writer completed the row (and <see cref="EndRow"/> counted it).
        /// </summary>
        public void Truncate(int row, bool finished)
        {
            var start = Kind == ColumnKind.Fixed ? row * Width : row == 0 ? 0 : _ends[row - 1];
            if (Kind == ColumnKind.Array && finished)
            {
                _countBytes -= ReadVarUInt(Data.Buffer.AsSpan(start, Data.Length - start)).Size;
            }

            Data.Truncate(start);
        }

        /// <summary>Takes out rows <paramref name="start"/> to <paramref name="start"/> + <paramref name="count"/> of the <paramref name="rows"/> held; returns the memory they held (as the block counts it).</summary>
        public long RemoveRows(int rows, int start, int count)
        {
            var (from, _) = Range(start);
            var (_, to) = Range(start + count - 1);
            var removed = to - from;
            if (Kind == ColumnKind.Array)
            {
                for (var row = start; row < start + count; row++)
                {
                    var (s, e) = Range(row);
                    _countBytes -= ReadVarUInt(Data.Buffer.AsSpan(s, e - s)).Size;
                }
            }

            Data.RemoveRange(from, removed);
            if (Kind == ColumnKind.Fixed)
            {
                return removed;
            }

            // The later rows' ends move up by the bytes and the rows taken out.
            for (var row = start + count; row < rows; row++)
            {
                _ends[row - count] = _ends[row] - removed;
            }

            return removed + (long)count * sizeof(int);
        }

        public long EncodedLength(int rows) => Kind == ColumnKind.Array ? (long)rows * sizeof(ulong) + Data.Length - _countBytes : Data.Length;

        public async Task WriteValuesAsync(Sink sink, int rows, int[]? order, CancellationToken cancellationToken)
        {
            if (Kind != ColumnKind.Array && order is null)
            {
                await sink.WriteAsync(Data.WrittenMemory, cancellationToken); // already Native's encoding
                return;
            }

            if (Kind == ColumnKind.Array)
            {
                // Native: every row's end offset into the items (UInt64), then all items.
                ulong end = 0;
                for (var i = 0; i < rows;)
                {
                    (i, end) = FillOffsets(sink, rows, order, i, end);
                    if (i < rows)
                    {
                        await sink.FlushAsync(cancellationToken);
                    }
                }
            }

            // Rows are copied synchronously while they fit the sink's chunk: one await per chunk, not per row.
            for (var i = 0; i < rows;)
            {
                i = FillValues(sink, rows, order, i);
                if (i < rows)
                {
                    var value = Value(order?[i] ?? i);
                    await sink.FlushAsync(cancellationToken);
                    if (value.Length > sink.Buffer.Length)
                    {
                        await sink.WriteAsync(Data.Buffer.AsMemory(value.Start, value.Length), cancellationToken);
                        i++;
                    }
                }
            }
        }

        // Where the value of a row starts and how long it is, as Native sends it (an Array without its count).
        private (int Start, int Length) Value(int row)
        {
            var (start, end) = Range(row);
            if (Kind == ColumnKind.Array)
            {
                start += ReadVarUInt(Data.Buffer.AsSpan(start, end - start)).Size;
            }

            return (start, end - start);
        }

        private (int Next, ulong End) FillOffsets(Sink sink, int rows, int[]? order, int i, ulong end)
        {
            var free = sink.Free;
            var written = 0;
            for (; i < rows && free.Length - written >= sizeof(ulong); i++)
            {
                var (start, stop) = Range(order?[i] ?? i);
                end += ReadVarUInt(Data.Buffer.AsSpan(start, stop - start)).Value;
                BinaryPrimitives.WriteUInt64LittleEndian(free[written..], end);
                written += sizeof(ulong);
            }

            sink.Advance(written);
            return (i, end);
        }

        private int FillValues(Sink sink, int rows, int[]? order, int i)
        {
            if (order is not null)
            {
                return Kind == ColumnKind.Fixed ? GatherFixed(sink, rows, order, i) : GatherVariable(sink, rows, order, i);
            }

            // Rows in the order they were appended: one range copy per value.
            var free = sink.Free;
            var written = 0;
            var data = Data.Buffer;
            for (; i < rows; i++)
            {
                var (start, length) = Value(i);
                if (length > free.Length - written)
                {
                    break;
                }

                data.AsSpan(start, length).CopyTo(free[written..]);
                written += length;
            }

            sink.Advance(written);
            return i;
        }

        // A fixed-width column in sort order: each value read and written as one number of its width,
        // not a range looked up and copied (about 0.15 µs a flow row less over the block's ~30 such columns).
        private int GatherFixed(Sink sink, int rows, int[] order, int i)
        {
            var free = sink.Free;
            var data = Data.Buffer.AsSpan(0, rows * Width);
            var count = Math.Min(rows - i, free.Length / Width);
            var rowsOut = order.AsSpan(i, count);
            switch (Width)
            {
                case 1:
                    Gather<byte>(data, rowsOut, free);
                    break;
                case 2:
                    Gather<ushort>(data, rowsOut, free);
                    break;
                case 4:
                    Gather<uint>(data, rowsOut, free);
                    break;
                case 8:
                    Gather<ulong>(data, rowsOut, free);
                    break;
                case 16:
                    Gather<UInt128>(data, rowsOut, free);
                    break;
                default:
                    for (var k = 0; k < rowsOut.Length; k++)
                    {
                        data.Slice(rowsOut[k] * Width, Width).CopyTo(free[(k * Width)..]);
                    }

                    break;
            }

            sink.Advance(count * Width);
            return i + count;
        }

        // A String or Array column in sort order. Most values (a String's length byte and a short
        // name; an Array's items after its count, which Native sends as offsets instead) are under 16
        // bytes: those are copied as one 16-byte load and store, the bytes past the value landing in
        // free room that the next value overwrites, instead of a range look-up and a Memmove call each
        // (Memmove under this loop was about 4 % of the relay's CPU in the ingest bench).
        private int GatherVariable(Sink sink, int rows, int[] order, int i)
        {
            var free = sink.Free;
            var data = Data.Buffer;
            var ends = _ends;
            var isArray = Kind == ColumnKind.Array;
            var written = 0;
            for (; i < rows; i++)
            {
                var row = order[i];
                var start = row == 0 ? 0 : ends[row - 1];
                var end = ends[row];
                if (isArray)
                {
                    start += data[start] < 0x80 ? 1 : ReadVarUInt(data.AsSpan(start, end - start)).Size;
                }

                var length = end - start;
                var room = free.Length - written;
                if (length <= Vector128<byte>.Count && room >= Vector128<byte>.Count && start <= data.Length - Vector128<byte>.Count)
                {
                    Vector128.Create<byte>(data.AsSpan(start, Vector128<byte>.Count)).CopyTo(free[written..]);
                }
                else if (length <= room)
                {
                    data.AsSpan(start, length).CopyTo(free[written..]);
                }
                else
                {
                    break;
                }

                written += length;
            }

            sink.Advance(written);
            return i;
        }

        private static void Gather<T>(ReadOnlySpan<byte> data, ReadOnlySpan<int> rows, Span<byte> free)
            where T : unmanaged
        {
            var values = MemoryMarshal.Cast<byte, T>(free);
            var source = MemoryMarshal.Cast<byte, T>(data);
            for (var k = 0; k < rows.Length; k++)
            {
                values[k] = source[rows[k]];
            }
        }

        public void Clear(int rows)
        {
            // A buffer far larger than what it carried was grown by a burst: let it go rather than
            // pin it, while a steady load keeps reusing its buffer.
            if (Data.Capacity > 1024 * 1024 && Data.Capacity > 4 * Data.Length)
            {
                Data = new RowBinaryWriter(Math.Max(InitialCapacity, Data.Length));
            }

            if (_ends.Length > 64 * 1024 && _ends.Length > 4 * rows)
            {
                _ends = [];
            }

            Data.Clear();
            _countBytes = 0;
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

    /// <summary>One expression of the sort key, laid out as key words that order the way ClickHouse orders its values.</summary>
    private sealed class SortPart(Column column, SortPart.Kind order)
    {
        private int[] _rowIds = [];

        public enum Kind
        {
            Unsigned,
            Signed,
            FixedString,
            String,
            Hour,
        }

        public Column Column => column;

        public Kind Order => order;

        /// <summary>Key words per row: a FixedString(N) takes N/8 rounded up, everything else one.</summary>
        public int Words => order == Kind.FixedString ? (column.Width + 7) / 8 : 1;

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

                Kind? kind = (hour, column.Kind, column.WireType) switch
                {
                    // toStartOfHour depends on the column's time zone; only UTC is a plain division.
                    (true, ColumnKind.Fixed, "DateTime('UTC')") => Kind.Hour,
                    (true, _, _) => null,
                    (_, ColumnKind.String, _) => Kind.String,
                    (_, ColumnKind.Fixed, var t) when t.StartsWith("FixedString(", StringComparison.Ordinal) => Kind.FixedString,
                    (_, ColumnKind.Fixed, var t) when t.StartsWith("UInt", StringComparison.Ordinal) || t.StartsWith("DateTime", StringComparison.Ordinal) => Kind.Unsigned,
                    (_, ColumnKind.Fixed, var t) when t.StartsWith("Int", StringComparison.Ordinal) || t.StartsWith("Enum", StringComparison.Ordinal) => Kind.Signed,
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

        /// <summary>Writes this part's words of every row into <paramref name="keys"/> (row r's at r × stride + first).</summary>
        public void FillKeys(ulong[] keys, int first, int stride, int rows)
        {
            if (order == Kind.String)
            {
                FillStringKeys(keys, first, stride, rows);
                return;
            }

            var data = column.Data.Buffer;
            var width = column.Width;
            for (var r = 0; r < rows; r++)
            {
                var at = r * stride + first;
                switch (order)
                {
                    case Kind.Hour:
                        keys[at] = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(r * 4)) / 3600u;
                        break;
                    case Kind.Unsigned:
                        keys[at] = Unsigned(data, r * width, width);
                        break;
                    case Kind.Signed:
                        keys[at] = unchecked((ulong)Signed(data, r * width, width) ^ 0x8000_0000_0000_0000UL);
                        break;
                    case Kind.FixedString:
                        for (var w = 0; w * 8 < width; w++)
                        {
                            // Whole words (an address's two) are read directly: BigEndianPrefix pads on the
                            // stack, so it is a call per word, about 2 % of the relay's CPU for flows' two addresses.
                            var word = data.AsSpan(r * width + w * 8);
                            keys[at + w] = width - w * 8 >= 8 ? BinaryPrimitives.ReadUInt64BigEndian(word) : BigEndianPrefix(word[..(width - w * 8)]);
                        }

                        break;
                    default:
                        return;
                }
            }
        }

        // A String's word is the rank of its value among the distinct values of the block: one hash
        // look-up a row, and string comparisons only among distinct values.
        private void FillStringKeys(ulong[] keys, int first, int stride, int rows)
        {
            var ids = new Dictionary<ReadOnlyMemory<byte>, int>(ByteContent.Instance);
            if (_rowIds.Length < rows || _rowIds.Length > 4 * rows)
            {
                _rowIds = new int[rows]; // kept for the next block of about this size
            }

            var rowIds = _rowIds;
            var data = column.Data.Buffer;
            for (var r = 0; r < rows; r++)
            {
                var (start, end) = column.Range(r);
                var prefix = ReadVarUInt(data.AsSpan(start, end - start)).Size;
                var value = data.AsMemory(start + prefix, end - start - prefix);
                if (!ids.TryGetValue(value, out var id))
                {
                    id = ids.Count;
                    ids.Add(value, id);
                }

                rowIds[r] = id;
            }

            var distinct = new ReadOnlyMemory<byte>[ids.Count];
            var byId = new int[ids.Count];
            foreach (var (value, id) in ids)
            {
                distinct[id] = value;
                byId[id] = id;
            }

            Array.Sort(distinct, byId, Comparer<ReadOnlyMemory<byte>>.Create((x, y) => x.Span.SequenceCompareTo(y.Span)));
            var rank = new ulong[distinct.Length];
            for (var i = 0; i < byId.Length; i++)
            {
                rank[byId[i]] = (ulong)i;
            }

            for (var r = 0; r < rows; r++)
            {
                keys[r * stride + first] = rank[rowIds[r]];
            }
        }

        /// <summary>Byte-content equality for the distinct-value look-up.</summary>
        private sealed class ByteContent : IEqualityComparer<ReadOnlyMemory<byte>>
        {
            public static readonly ByteContent Instance = new();

            public bool Equals(ReadOnlyMemory<byte> x, ReadOnlyMemory<byte> y) => x.Span.SequenceEqual(y.Span);

            public int GetHashCode(ReadOnlyMemory<byte> value)
            {
                var hash = new HashCode();
                hash.AddBytes(value.Span);
                return hash.ToHashCode();
            }
        }

        // Bytes compare like memcmp exactly when their big-endian words do (a FixedString's last word pads with zeros).
        private static ulong BigEndianPrefix(ReadOnlySpan<byte> bytes)
        {
            if (bytes.Length >= 8)
            {
                return BinaryPrimitives.ReadUInt64BigEndian(bytes);
            }

            Span<byte> padded = stackalloc byte[8];
            padded.Clear();
            bytes.CopyTo(padded);
            return BinaryPrimitives.ReadUInt64BigEndian(padded);
        }

        private static ulong Unsigned(byte[] data, int at, int width) => width switch
        {
            1 => data[at],
            2 => BinaryPrimitives.ReadUInt16LittleEndian(data.AsSpan(at)),
            4 => BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(at)),
            _ => BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(at)),
        };

        private static long Signed(byte[] data, int at, int width) => width switch
        {
            1 => (sbyte)data[at],
            2 => BinaryPrimitives.ReadInt16LittleEndian(data.AsSpan(at)),
            4 => BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(at)),
            _ => BinaryPrimitives.ReadInt64LittleEndian(data.AsSpan(at)),
        };
    }

    /// <summary>Buffers writes into chunks, so thousands of small values cost few stream writes.</summary>
    private sealed class Sink(Stream stream, byte[] buffer)
    {
        private int _length;

        public byte[] Buffer => buffer;

        /// <summary>The unused rest of the chunk, to fill synchronously and then <see cref="Advance"/>.</summary>
        public Span<byte> Free => buffer.AsSpan(_length);

        public void Advance(int count) => _length += count;

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

/// <summary>One row's values for <see cref="NativeBlock.AppendRow{TRow}"/>, written column by column.</summary>
internal interface IRowSource
{
    /// <summary>Writes the value of column <paramref name="column"/> (an index into <see cref="EventTable.Columns"/>) as its column writer encodes it.</summary>
    void Write(int column, RowBinaryWriter data);
}

/// <summary>A run of rows' values for <see cref="NativeBlock.AppendColumns{TSource}"/>, written one column at a time.</summary>
internal interface IColumnSource
{
    /// <summary>
    /// Writes the run's values of column <paramref name="column"/> (an index into
    /// <see cref="EventTable.Columns"/>) into <paramref name="values"/>, in row order, each encoded as
    /// the column's writer encodes it.
    /// </summary>
    void WriteColumn(int column, ref NativeBlock.ColumnValues values);
}
