using System.Text;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// The file capture's watched, changes-only and excluded path prefixes, as entries of the
/// kernel's <c>watched_prefixes</c> LPM trie, and the same longest-prefix match in user space
/// (for paths the kernel sends unnormalized). A prefix is a directory, matched per path
/// component: "/etc" covers "/etc" itself and everything below it, not "/etcetera"; a prefix
/// written with a trailing slash ("/home/") covers only what is below it. The longest matching
/// entry decides, so "/etc/ld.so.cache" inside "/etc" can be changes-only or excluded.
/// </summary>
internal sealed class WatchedPaths
{
    /// <summary>Longest prefix accepted, in UTF-8 bytes: a key plus its NUL or slash fits 256 bytes.</summary>
    public const int MaxPrefixBytes = FsPathKey.PathLength - 2;

    private WatchedPaths(IReadOnlyList<Entry> entries)
    {
        Entries = entries;
    }

    /// <summary>
    /// One trie entry: <paramref name="Key"/> is either a directory with its trailing slash
    /// (matches what starts with it) or, when <paramref name="Exact"/>, a path matched whole
    /// (the kernel key ends in the path's NUL).
    /// </summary>
    internal readonly record struct Entry(string Key, bool Exact, FileWatch Watch)
    {
        /// <summary>Bytes the kernel key covers: the UTF-8 key, plus its NUL when exact.</summary>
        public int KeyBytes => Encoding.UTF8.GetByteCount(Key) + (Exact ? 1 : 0);
    }

    /// <summary>The entries; for the same key an exclusion wins over changes-only, which wins over a watch.</summary>
    public IReadOnlyList<Entry> Entries { get; }

    /// <summary>
    /// Builds the entries: <paramref name="watched"/> report every call,
    /// <paramref name="changesOnly"/> only creates, writes, unlinks and renames,
    /// <paramref name="excluded"/> nothing. Throws <see cref="ArgumentException"/> for a prefix
    /// that is not an absolute path or is longer than <see cref="MaxPrefixBytes"/> bytes.
    /// </summary>
    public static WatchedPaths Create(IEnumerable<string> watched, IEnumerable<string> excluded, IEnumerable<string>? changesOnly = null)
    {
        var entries = new Dictionary<(string Key, bool Exact), FileWatch>();
        foreach (var (prefixes, watch) in new[] { (watched, FileWatch.Report), (changesOnly ?? [], FileWatch.Changes), (excluded, FileWatch.Ignore) })
        {
            foreach (string prefix in prefixes)
            {
                foreach (var (key, exact) in KeysOf(prefix))
                {
                    // Later lists overwrite: the same key watched and excluded is excluded.
                    entries[(key, exact)] = watch;
                }
            }
        }
        return new WatchedPaths(entries.Select(e => new Entry(e.Key.Key, e.Key.Exact, e.Value))
            .OrderBy(e => e.Key, StringComparer.Ordinal).ThenBy(e => e.Exact).ToArray());
    }

    /// <summary>
    /// Whether the longest entry matching <paramref name="path"/> (absolute, normalized) reports
    /// <paramref name="op"/> on it (reads for <see cref="FileOp.Open"/>, changes for the rest).
    /// </summary>
    public bool IsWatched(string path, FileOp op = FileOp.Open)
    {
        Entry? best = null;
        foreach (var e in Entries)
        {
            bool match = e.Exact ? path == e.Key : path.StartsWith(e.Key, StringComparison.Ordinal);
            if (match && (best is null || e.KeyBytes > best.Value.KeyBytes))
            {
                best = e;
            }
        }
        FileWatch want = op == FileOp.Open ? FileWatch.Reads : FileWatch.Changes;
        return best is { } b && (b.Watch & want) != 0;
    }

    /// <summary>
    /// Resolves "//", "." and ".." lexically, as Falco normalizes paths: "/tmp/../etc/shadow" is
    /// "/etc/shadow". Symbolic links are not followed. A path that is not absolute is returned as is.
    /// </summary>
    public static string Normalize(string path)
    {
        if (!path.StartsWith('/'))
        {
            return path;
        }
        var parts = new List<string>();
        foreach (string part in path.Split('/'))
        {
            if (part.Length == 0 || part == ".")
            {
                continue;
            }
            if (part == "..")
            {
                // ".." at the root stays at the root, as the kernel resolves it.
                if (parts.Count > 0)
                {
                    parts.RemoveAt(parts.Count - 1);
                }
                continue;
            }
            parts.Add(part);
        }
        return "/" + string.Join('/', parts);
    }

    /// <summary>The kernel key of <paramref name="entry"/>.</summary>
    internal static unsafe FsPathKey ToKey(Entry entry)
    {
        var key = new FsPathKey();
        byte[] bytes = Encoding.UTF8.GetBytes(entry.Key);
        bytes.CopyTo(new Span<byte>(key.path, FsPathKey.PathLength));
        // An exact key covers the NUL after the path (already zero in the key).
        key.prefixlen = (uint)entry.KeyBytes * 8;
        return key;
    }

    private static IEnumerable<(string Key, bool Exact)> KeysOf(string prefix)
    {
        if (string.IsNullOrEmpty(prefix) || prefix[0] != '/' || prefix.Contains('\0'))
        {
            throw new ArgumentException($"watched/excluded path prefix '{prefix}' must be an absolute path");
        }
        bool childrenOnly = prefix.Length > 1 && prefix.EndsWith('/');
        string normalized = Normalize(prefix);
        if (Encoding.UTF8.GetByteCount(normalized) > MaxPrefixBytes)
        {
            throw new ArgumentException($"path prefix '{prefix}' is longer than {MaxPrefixBytes} bytes");
        }
        if (normalized == "/")
        {
            return [("/", false)];
        }
        return childrenOnly
            ? [(normalized + "/", false)]
            : [(normalized + "/", false), (normalized, true)];
    }
}
