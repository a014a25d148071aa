using System.Buffers.Binary;
using System.Text;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// Process names (<c>comm</c>, 16 bytes, NUL-padded) as strings, without allocating one per
/// record: a node runs few distinct processes, and the TCP capture decodes several records per
/// connection, so the same name is decoded again and again. One cache per thread (each capture
/// decodes on its own drain thread), small and wiped when full.
/// </summary>
internal static class CommNames
{
    private const int MaxEntries = 1024;

    [ThreadStatic]
    private static Dictionary<(ulong, ulong), string>? t_cache;

    /// <summary>The name in <paramref name="comm"/> up to its first NUL (UTF-8).</summary>
    public static string Get(ReadOnlySpan<byte> comm)
    {
        if (comm.Length != 16)
        {
            return Decode(comm);
        }
        var key = (BinaryPrimitives.ReadUInt64LittleEndian(comm), BinaryPrimitives.ReadUInt64LittleEndian(comm[8..]));
        var cache = t_cache ??= [];
        if (!cache.TryGetValue(key, out var name))
        {
            if (cache.Count >= MaxEntries)
            {
                cache.Clear();
            }
            name = Decode(comm);
            cache[key] = name;
        }
        return name;
    }

    private static string Decode(ReadOnlySpan<byte> comm)
    {
        int nul = comm.IndexOf((byte)0);
        return Encoding.UTF8.GetString(nul >= 0 ? comm[..nul] : comm);
    }
}
