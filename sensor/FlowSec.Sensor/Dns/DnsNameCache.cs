using System.Buffers.Binary;
using System.Net;
using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Capture;
using Microsoft.Extensions.Options;

namespace FlowSec.Sensor.Dns;

/// <summary>
/// IP address → the DNS names it was resolved from, learned from A/AAAA answers and the CNAME
/// chains that led to them. Flows use it to fill <c>Endpoint.names</c>.
/// </summary>
/// <remarks>
/// Bounded: at most <see cref="Capacity"/> addresses (least recently used evicted first) and
/// <see cref="MaxNamesPerAddress"/> names each. TTL-aware: a name is kept for its record's TTL,
/// but at least <c>NameMinTtl</c> (connections outlive short TTLs, and the flow that used a name
/// is often reported minutes later, when it closes) and at most <c>NameMaxTtl</c>. Thread-safe:
/// the DNS drain thread writes, exporters read; one lock, O(1) per call.
/// </remarks>
public sealed class DnsNameCache : IEndpointNames
{
    // Bounds the CNAME walk: real chains are a handful long, hostile ones may loop.
    private const int MaxChainLength = 16;

    private readonly Lock _lock = new();
    // Keyed by the address's 16-byte IPv6 form (IPv4 as ::ffff:a.b.c.d): flows look names up from
    // their raw address bytes, and an IPAddress per lookup was a visible share of the sensor's CPU.
    private readonly Dictionary<UInt128, LinkedListNode<Entry>> _entries = new();
    private readonly LinkedList<Entry> _lru = new(); // most recently used first
    private readonly TimeProvider _time;
    private readonly long _minTtlTicks;
    private readonly long _maxTtlTicks;
    private long _evicted;

    /// <summary>Creates the cache from the DNS capture options.</summary>
    public DnsNameCache(IOptions<DnsCaptureOptions> options)
        : this(options.Value.NameCacheCapacity, options.Value.NameMinTtl, options.Value.NameMaxTtl)
    {
    }

    /// <summary>Creates a cache for <paramref name="capacity"/> addresses.</summary>
    public DnsNameCache(int capacity, TimeSpan minTtl, TimeSpan maxTtl, int maxNamesPerAddress = 8, TimeProvider? time = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxNamesPerAddress);
        ArgumentOutOfRangeException.ThrowIfNegative(minTtl.Ticks);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTtl, minTtl);
        Capacity = capacity;
        MaxNamesPerAddress = maxNamesPerAddress;
        _time = time ?? TimeProvider.System;
        _minTtlTicks = ToTimestamp(minTtl);
        _maxTtlTicks = ToTimestamp(maxTtl);
    }

    /// <summary>Addresses kept at most.</summary>
    public int Capacity { get; }

    /// <summary>Names kept per address at most (the most recent).</summary>
    public int MaxNamesPerAddress { get; }

    /// <summary>Addresses currently cached (expired ones included until touched or evicted).</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>Addresses evicted to stay within <see cref="Capacity"/>.</summary>
    public long Evicted => Interlocked.Read(ref _evicted);

    /// <summary>The live names of <paramref name="ip"/>, most recently learned first; empty when none.</summary>
    public IReadOnlyList<string> NamesFor(IPAddress ip) => NamesFor(KeyOf(ip));

    /// <inheritdoc />
    public IReadOnlyList<string> NamesFor(ReadOnlySpan<byte> address) =>
        address.Length is 4 or 16 ? NamesFor(KeyOf(address)) : [];

    private IReadOnlyList<string> NamesFor(UInt128 key)
    {
        lock (_lock)
        {
            if (!_entries.TryGetValue(key, out var node))
            {
                return [];
            }
            // The clock only for a hit: most endpoints have no name, and the read was a visible
            // share of enrichment at 20 k flows/s.
            long now = _time.GetTimestamp();
            var names = node.Value.Names;
            names.RemoveAll(n => n.ExpiresAt <= now);
            if (names.Count == 0)
            {
                Remove(node);
                return [];
            }
            _lru.Remove(node);
            _lru.AddFirst(node);
            var result = new string[names.Count];
            for (int i = 0; i < result.Length; i++)
            {
                result[i] = names[i].Name;
            }
            return result;
        }
    }

    /// <summary>Records that <paramref name="ip"/> was resolved from <paramref name="name"/> with <paramref name="ttlSeconds"/>.</summary>
    public void Add(IPAddress ip, string name, uint ttlSeconds)
    {
        UInt128 key = KeyOf(ip);
        // RFC 2181 §8: a TTL with the top bit set means zero.
        long ttl = ttlSeconds > int.MaxValue ? 0 : ToTimestamp(TimeSpan.FromSeconds(ttlSeconds));
        long expiresAt = _time.GetTimestamp() + Math.Clamp(ttl, _minTtlTicks, _maxTtlTicks);
        lock (_lock)
        {
            if (_entries.TryGetValue(key, out var node))
            {
                _lru.Remove(node);
            }
            else
            {
                while (_entries.Count >= Capacity && _lru.Last is { } oldest)
                {
                    Remove(oldest);
                    Interlocked.Increment(ref _evicted);
                }
                node = new LinkedListNode<Entry>(new Entry(key));
                _entries[key] = node;
            }
            _lru.AddFirst(node);
            var names = node.Value.Names;
            int existing = names.FindIndex(n => n.Name == name);
            if (existing >= 0)
            {
                expiresAt = Math.Max(expiresAt, names[existing].ExpiresAt);
                names.RemoveAt(existing);
            }
            names.Insert(0, new CachedName(name, expiresAt));
            if (names.Count > MaxNamesPerAddress)
            {
                names.RemoveRange(MaxNamesPerAddress, names.Count - MaxNamesPerAddress);
            }
        }
    }

    /// <summary>
    /// Learns from a response: every A/AAAA answer reached from the question through CNAMEs maps
    /// its address to the question name and the chain's names (the question name first). Records
    /// not on that chain are ignored, so a response cannot plant names for unrelated addresses.
    /// Only NOERROR responses teach anything.
    /// </summary>
    public void Learn(DnsMessage response)
    {
        if (!response.Header.IsResponse || response.Rcode != 0 || !response.HasQuestion || response.Answers.Count == 0)
        {
            return;
        }
        // chain[0] is the question; each next is the CNAME target of one before.
        var chain = new List<string>(4) { response.QuestionName };
        for (int grown = 1; grown > 0 && chain.Count < MaxChainLength;)
        {
            grown = 0;
            foreach (var answer in response.Answers)
            {
                if (answer.Type == DnsNames.TypeCname && chain.Contains(answer.Name) && !chain.Contains(answer.Data)
                    && chain.Count < MaxChainLength)
                {
                    chain.Add(answer.Data);
                    grown++;
                }
            }
        }
        foreach (var answer in response.Answers)
        {
            if (answer.Address is null || !chain.Contains(answer.Name))
            {
                continue;
            }
            // Added last-to-first so the question name ends up first ("most recent").
            for (int i = chain.IndexOf(answer.Name); i >= 0; i--)
            {
                Add(answer.Address, chain[i], answer.Ttl);
            }
        }
    }

    private void Remove(LinkedListNode<Entry> node)
    {
        _lru.Remove(node);
        _entries.Remove(node.Value.Address);
    }

    /// <summary>The 16-byte IPv6 form of a 4- or 16-byte address, as one number (IPv4 as ::ffff:a.b.c.d).</summary>
    internal static UInt128 KeyOf(ReadOnlySpan<byte> address) => address.Length == 4
        ? ((UInt128)0xFFFF << 32) | BinaryPrimitives.ReadUInt32BigEndian(address)
        : BinaryPrimitives.ReadUInt128BigEndian(address);

    private static UInt128 KeyOf(IPAddress ip)
    {
        Span<byte> bytes = stackalloc byte[16];
        return ip.TryWriteBytes(bytes, out int written) ? KeyOf(bytes[..written]) : UInt128.Zero;
    }

    private long ToTimestamp(TimeSpan span) =>
        (long)Math.Min(span.Ticks * (double)_time.TimestampFrequency / TimeSpan.TicksPerSecond, long.MaxValue / 4);

    private sealed class Entry(UInt128 address)
    {
        public UInt128 Address { get; } = address;

        public List<CachedName> Names { get; } = new(2);
    }

    private readonly record struct CachedName(string Name, long ExpiresAt);
}
