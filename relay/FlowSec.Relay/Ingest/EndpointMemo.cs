using System.Buffers.Binary;
using System.Numerics;

namespace FlowSec.Relay.Ingest;

/// <summary>
/// What an endpoint's identity fields (everything after its ip and port: pid, process, cgroup,
/// container, workload, pod, namespace, labels, names) appended to each of the endpoint's columns,
/// keyed by those fields' exact protobuf bytes, for <see cref="EventBatchDecoder"/>. The same
/// endpoints recur across the flows of a node's batches, so a hit replays the recorded column bytes
/// instead of parsing, validating and re-encoding the fields. Entries are compared byte for byte on a
/// hash match (the hash alone is never trusted), and a value is whatever the column writer produced
/// for those bytes, so a replayed row is byte-identical to a decoded one.
/// </summary>
/// <remarks>
/// Direct-mapped and bounded: <see cref="DefaultSlots"/> entries, each at most <see cref="MaxKeyBytes"/> of
/// key and <see cref="MaxValueBytes"/> of values, reused in place (a miss overwrites its slot; no
/// allocation once a slot's buffer has grown). Not thread-safe: one decode call uses one memo at a
/// time. The memo knows nothing of which columns exist: it records values by the column index the
/// decoder gives it.
/// </remarks>
internal sealed class EndpointMemo
{
    /// <summary>Entries held, at most, unless a test asks for fewer.</summary>
    public const int DefaultSlots = 4096;

    /// <summary>Identity bytes longer than this are not memoized.</summary>
    public const int MaxKeyBytes = 512;

    /// <summary>An entry whose recorded values would be longer than this is dropped.</summary>
    public const int MaxValueBytes = 1024;

    private readonly int _columns;
    private readonly int _slotMask;
    private readonly ulong[] _hashes; // 0: empty, or being recorded
    private readonly int[] _keyLengths;
    private readonly int[] _used; // key + values recorded so far
    private readonly byte[]?[] _bytes;
    private readonly int[] _ranges; // per slot and column: start and end of its recorded value; end -1 = not recorded
    private int _rowSlotA = -1;
    private int _rowSlotB = -1;

    /// <summary>A memo for endpoints of <paramref name="columns"/> columns (value indexes 0 to columns - 1).</summary>
    /// <param name="columns">Columns an endpoint has.</param>
    /// <param name="slots">Entries held, at most: a power of two (tests use 1 so that every key collides).</param>
    public EndpointMemo(int columns, int slots = DefaultSlots)
    {
        if (!BitOperations.IsPow2(slots))
        {
            throw new ArgumentOutOfRangeException(nameof(slots), slots, "a power of two");
        }

        _columns = columns;
        _slotMask = slots - 1;
        _hashes = new ulong[slots];
        _keyLengths = new int[slots];
        _used = new int[slots];
        _bytes = new byte[slots][];
        _ranges = new int[slots * columns * 2];
    }

    /// <summary>Look-ups that found their entry since the counters were last taken.</summary>
    public long Hits { get; set; }

    /// <summary>Look-ups that did not (and so parsed the fields).</summary>
    public long Misses { get; set; }

    /// <summary>Starts a row: the slots its endpoints replay from or record into are known only to it.</summary>
    public void BeginRow() => _rowSlotA = _rowSlotB = -1;

    /// <summary>The slot holding exactly <paramref name="key"/>, or -1; <paramref name="hash"/> is the key's, for <see cref="TryBeginRecord"/>.</summary>
    public int Find(ReadOnlySpan<byte> key, out ulong hash)
    {
        hash = Hash(key);
        var slot = (int)(hash >> 32) & _slotMask;
        if (_hashes[slot] == hash && key.SequenceEqual(_bytes[slot].AsSpan(0, _keyLengths[slot])))
        {
            Hits++;
            MarkRowSlot(slot);
            return slot;
        }

        Misses++;
        return -1;
    }

    /// <summary>
    /// Starts recording the entry for <paramref name="key"/> (found missing with <paramref name="hash"/>);
    /// false when its slot serves the other endpoint of this row. The slot is empty until <see cref="Commit"/>.
    /// </summary>
    public bool TryBeginRecord(ReadOnlySpan<byte> key, ulong hash, out int slot)
    {
        slot = (int)(hash >> 32) & _slotMask;
        if (slot == _rowSlotA || slot == _rowSlotB || key.Length > MaxKeyBytes)
        {
            return false;
        }

        MarkRowSlot(slot);
        _hashes[slot] = 0;
        var bytes = _bytes[slot];
        if (bytes is null || bytes.Length < key.Length + 64)
        {
            bytes = _bytes[slot] = new byte[Math.Max(256, BitOperations.RoundUpToPowerOf2((uint)key.Length + 64))];
        }

        key.CopyTo(bytes);
        _keyLengths[slot] = _used[slot] = key.Length;
        _ranges.AsSpan(slot * _columns * 2, _columns * 2).Fill(-1);
        return true;
    }

    /// <summary>Records what column <paramref name="column"/> got for the entry being recorded in <paramref name="slot"/>; false when the entry grew too large (it is then abandoned).</summary>
    public bool Record(int slot, int column, ReadOnlySpan<byte> value)
    {
        var used = _used[slot];
        if (used + value.Length > _keyLengths[slot] + MaxValueBytes)
        {
            return false;
        }

        var bytes = _bytes[slot]!;
        if (bytes.Length < used + value.Length)
        {
            Array.Resize(ref bytes, (int)BitOperations.RoundUpToPowerOf2((uint)(used + value.Length)));
            _bytes[slot] = bytes;
        }

        value.CopyTo(bytes.AsSpan(used));
        var at = (slot * _columns + column) * 2;
        _ranges[at] = used;
        _ranges[at + 1] = used + value.Length;
        _used[slot] = used + value.Length;
        return true;
    }

    /// <summary>Makes the entry recorded in <paramref name="slot"/> findable (after its row was appended whole).</summary>
    public void Commit(int slot, ulong hash) => _hashes[slot] = hash;

    /// <summary>What column <paramref name="column"/> got when the entry in <paramref name="slot"/> was recorded.</summary>
    /// <exception cref="InvalidOperationException">The column was not written when the entry was recorded.</exception>
    public ReadOnlySpan<byte> Value(int slot, int column)
    {
        var at = (slot * _columns + column) * 2;
        var end = _ranges[at + 1];
        if (end < 0)
        {
            throw new InvalidOperationException($"Endpoint memo entry has no value for column {column}.");
        }

        return _bytes[slot].AsSpan(_ranges[at], end - _ranges[at]);
    }

    private void MarkRowSlot(int slot)
    {
        if (_rowSlotA < 0)
        {
            _rowSlotA = slot;
        }
        else
        {
            _rowSlotB = slot;
        }
    }

    // 64-bit multiply-xorshift over 8-byte words, two lanes so the multiplies overlap; never 0 (0 marks an empty slot).
    private static ulong Hash(ReadOnlySpan<byte> key)
    {
        const ulong K1 = 0x9E3779B97F4A7C15;
        const ulong K2 = 0xC2B2AE3D27D4EB4F;
        ulong a = (ulong)key.Length * K1, b = K2;
        while (key.Length >= 16)
        {
            a = BitOperations.RotateLeft(a ^ BinaryPrimitives.ReadUInt64LittleEndian(key), 29) * K1;
            b = BitOperations.RotateLeft(b ^ BinaryPrimitives.ReadUInt64LittleEndian(key[8..]), 31) * K2;
            key = key[16..];
        }

        if (key.Length >= 8)
        {
            a = BitOperations.RotateLeft(a ^ BinaryPrimitives.ReadUInt64LittleEndian(key), 29) * K1;
            key = key[8..];
        }

        ulong tail = 0;
        for (var i = 0; i < key.Length; i++)
        {
            tail |= (ulong)key[i] << (8 * i);
        }

        b = BitOperations.RotateLeft(b ^ tail, 31) * K2;
        var h = a ^ BitOperations.RotateLeft(b, 17);
        h ^= h >> 33;
        h *= 0xFF51AFD7ED558CCD;
        h ^= h >> 33;
        return h | 1;
    }
}
