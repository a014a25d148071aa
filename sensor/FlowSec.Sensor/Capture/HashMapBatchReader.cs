namespace FlowSec.Sensor.Capture;

/// <summary>
/// Reads a BPF hash map in batches (BPF_MAP_LOOKUP_BATCH, Linux 5.6+): one syscall per few
/// thousand entries, and, unlike walking it with get_next_key, no restart from the first key when
/// the kernel deletes the key the walk stands on. The batch cursor is a bucket index, so an entry
/// present for the whole walk is returned exactly once, whatever else is inserted or evicted.
/// </summary>
internal sealed unsafe class HashMapBatchReader<TKey, TValue>
    where TKey : unmanaged
    where TValue : unmanaged
{
    private const int ENOENT = 2;
    private const int ENOSPC = 28;
    private const int MaxBatch = 1 << 20;

    private readonly int _mapFd;
    private TKey[] _keys;
    private TValue[] _values;

    /// <summary>Receives one entry; both are valid only during the call.</summary>
    public delegate void EntryHandler(in TKey key, in TValue value);

    /// <summary>Reads map <paramref name="mapFd"/> (owned by its object) <paramref name="batchSize"/> entries per syscall.</summary>
    public HashMapBatchReader(int mapFd, int batchSize = 4096)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        _mapFd = mapFd;
        _keys = new TKey[batchSize];
        _values = new TValue[batchSize];
    }

    /// <summary>
    /// Calls <paramref name="handler"/> for every entry; with <paramref name="delete"/> each batch
    /// is removed from the map as it is read (atomically per hash bucket). Returns the entry count.
    /// </summary>
    public int ReadAll(EntryHandler handler, bool delete)
    {
        // The kernel's cursor for hash maps is a 4-byte bucket index; 8 bytes leave room.
        ulong cursor = 0;
        ulong next = 0;
        bool first = true;
        int total = 0;
        var opts = new LibbpfMaps.MapBatchOpts { Size = (nuint)sizeof(LibbpfMaps.MapBatchOpts) };
        while (true)
        {
            uint count = (uint)_keys.Length;
            int result;
            fixed (TKey* keys = _keys)
            fixed (TValue* values = _values)
            {
                void* inBatch = first ? null : &cursor;
                result = delete
                    ? LibbpfMaps.MapLookupAndDeleteBatch(_mapFd, inBatch, &next, keys, values, &count, &opts)
                    : LibbpfMaps.MapLookupBatch(_mapFd, inBatch, &next, keys, values, &count, &opts);
            }
            if (result == -ENOSPC && count == 0 && _keys.Length < MaxBatch)
            {
                // One hash bucket holds more entries than the buffer: grow and retry the same bucket.
                _keys = new TKey[_keys.Length * 2];
                _values = new TValue[_values.Length * 2];
                continue;
            }
            if (result < 0 && result != -ENOENT)
            {
                Libbpf.Check(result, delete ? "bpf_map_lookup_and_delete_batch" : "bpf_map_lookup_batch");
            }
            for (int i = 0; i < (int)count; i++)
            {
                handler(in _keys[i], in _values[i]);
            }
            total += (int)count;
            // ENOENT: the walk has passed the last bucket (entries of this call are still valid).
            if (result == -ENOENT)
            {
                return total;
            }
            cursor = next;
            first = false;
        }
    }
}
