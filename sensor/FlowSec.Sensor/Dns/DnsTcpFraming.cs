using System.Buffers.Binary;

namespace FlowSec.Sensor.Dns;

/// <summary>One DNS message reassembled from TCP: what was kept of it, and its length from the prefix.</summary>
/// <param name="message">The message bytes kept (all of them unless it was longer than the per-stream bound or bytes were not captured).</param>
/// <param name="declaredLength">The length the 2-byte prefix announced.</param>
internal delegate void DnsTcpMessageHandler(ReadOnlySpan<byte> message, int declaredLength);

/// <summary>
/// Reassembles DNS messages sent over TCP (RFC 1035 §4.2.2, RFC 7766): each message is preceded by
/// its length, 2 bytes big-endian. One byte stream per socket and direction; the kernel gives each
/// segment's offset in its stream, so retransmitted bytes are dropped, a gap is seen, and a stream
/// first met mid-way is not mistaken for message starts.
/// </summary>
/// <remarks>
/// <para>Hostile or damaged input never stalls it: a length below a DNS header (12 bytes; 0 included)
/// cannot be a message, so the stream is out of step and its bytes are skipped until a segment that
/// is exactly whole messages (counted in <see cref="ContinuationsSkipped"/> and
/// <see cref="Garbage"/>). The same resync applies to a stream whose start was missed or that lost
/// bytes (a segment not seen, a prefix in bytes the kernel did not copy).</para>
/// <para>Memory is bounded: at most <c>maxStreams</c> streams (least recently used evicted and
/// counted), each keeping at most <c>maxMessageBytes</c> of the message in progress; a longer
/// message is delivered truncated with its declared length, as are messages whose middle bytes were
/// not captured.</para>
/// <para>Single-threaded (the DNS capture's drain thread); counters may be read from any thread.</para>
/// </remarks>
internal sealed class DnsTcpFraming
{
    /// <summary>A DNS message is at least its header.</summary>
    public const int MinMessageLength = 12;

    private readonly int _maxStreams;
    private readonly int _maxMessageBytes;
    private readonly Dictionary<(ulong Cookie, bool Egress), Stream> _streams = new();
    private readonly LinkedList<(ulong Cookie, bool Egress)> _lru = new();
    private long _messages, _split, _skipped, _garbage, _truncated, _retransmitted, _evicted;

    /// <summary>Tracks at most <paramref name="maxStreams"/> streams, each buffering at most <paramref name="maxMessageBytes"/> of a message.</summary>
    public DnsTcpFraming(int maxStreams, int maxMessageBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxStreams, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxMessageBytes, MinMessageLength);
        _maxStreams = maxStreams;
        _maxMessageBytes = maxMessageBytes;
    }

    /// <summary>Messages delivered.</summary>
    public long Messages => Interlocked.Read(ref _messages);

    /// <summary>Messages that arrived in more than one segment (reassembled).</summary>
    public long MessagesSplit => Interlocked.Read(ref _split);

    /// <summary>Segments (or their rest) skipped because the stream's message boundaries were not known: start missed, bytes lost, garbage.</summary>
    public long ContinuationsSkipped => Interlocked.Read(ref _skipped);

    /// <summary>Length prefixes that cannot be a DNS message (shorter than its header); the stream resyncs.</summary>
    public long Garbage => Interlocked.Read(ref _garbage);

    /// <summary>Messages delivered incomplete (longer than the per-stream bound, or bytes not captured).</summary>
    public long Truncated => Interlocked.Read(ref _truncated);

    /// <summary>Segments whose bytes had all been seen already (retransmissions), dropped.</summary>
    public long Retransmitted => Interlocked.Read(ref _retransmitted);

    /// <summary>Streams forgotten because <c>maxStreams</c> were tracked; a message in progress on one is lost.</summary>
    public long Evicted => Interlocked.Read(ref _evicted);

    /// <summary>Streams tracked now.</summary>
    public int Streams => _streams.Count;

    /// <summary>
    /// Takes one segment of the stream (<paramref name="cookie"/>, <paramref name="egress"/>):
    /// <paramref name="captured"/> is its start as copied, <paramref name="segmentLength"/> its full
    /// payload length, <paramref name="offset"/> where it starts in the stream (0 = first byte).
    /// Calls <paramref name="onMessage"/> for every message it completes.
    /// </summary>
    public void OnSegment(ulong cookie, bool egress, uint offset, int segmentLength, ReadOnlySpan<byte> captured, DnsTcpMessageHandler onMessage)
    {
        if (segmentLength <= 0)
        {
            return;
        }
        if (captured.Length > segmentLength)
        {
            captured = captured[..segmentLength];
        }
        var s = Touch((cookie, egress), offset);
        int delta = (int)(offset - s.Next);
        if (delta < 0)
        {
            // Bytes seen before (a retransmission, or overlap): keep only what is new.
            if (-delta >= segmentLength)
            {
                Interlocked.Increment(ref _retransmitted);
                return;
            }
            int seen = -delta;
            captured = seen < captured.Length ? captured[seen..] : default;
            segmentLength -= seen;
            offset = s.Next;
        }
        else if (delta > 0)
        {
            // Bytes in between were never seen: where the next message starts is unknown.
            Desync(s);
            s.Next = offset;
        }
        s.Next = offset + (uint)segmentLength;

        if (!s.Synced)
        {
            // Resync only on a segment that is exactly whole messages (a new query or answer).
            if (captured.Length != segmentLength || !WholeMessages(captured))
            {
                Interlocked.Increment(ref _skipped);
                return;
            }
            s.Synced = true;
        }
        Feed(s, captured, onMessage);
        if (s.Synced && captured.Length < segmentLength)
        {
            Hole(s, segmentLength - captured.Length, onMessage);
        }
        if (s.Synced && s.PrefixHave > 0)
        {
            s.SpansSegments = true;
        }
    }

    /// <summary>The TCP byte stream carrying <paramref name="messages"/>: each preceded by its length, 2 bytes big-endian (what a sender writes).</summary>
    public static byte[] Frame(IEnumerable<byte[]> messages)
    {
        var stream = new List<byte>();
        foreach (byte[] m in messages)
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThan(m.Length, ushort.MaxValue);
            stream.Add((byte)(m.Length >> 8));
            stream.Add((byte)m.Length);
            stream.AddRange(m);
        }
        return [.. stream];
    }

    /// <summary>Forgets the streams of a closed socket (both directions).</summary>
    public void Forget(ulong cookie)
    {
        Remove((cookie, true));
        Remove((cookie, false));
    }

    private static bool WholeMessages(ReadOnlySpan<byte> data)
    {
        int at = 0;
        while (at + 2 <= data.Length)
        {
            int length = BinaryPrimitives.ReadUInt16BigEndian(data[at..]);
            if (length < MinMessageLength)
            {
                return false;
            }
            at += 2 + length;
        }
        return at == data.Length && data.Length > 0;
    }

    private void Feed(Stream s, ReadOnlySpan<byte> data, DnsTcpMessageHandler onMessage)
    {
        while (!data.IsEmpty)
        {
            if (s.PrefixHave < 2)
            {
                // A whole message in what is left, nothing pending: deliver without copying.
                if (s.PrefixHave == 0 && data.Length >= 2)
                {
                    int length = BinaryPrimitives.ReadUInt16BigEndian(data);
                    if (length < MinMessageLength)
                    {
                        Bad(s);
                        return;
                    }
                    if (data.Length >= 2 + length && length <= _maxMessageBytes)
                    {
                        Deliver(data.Slice(2, length), length, onMessage, split: false);
                        data = data[(2 + length)..];
                        continue;
                    }
                    s.Begin(length);
                    data = data[2..];
                    continue;
                }
                s.Prefix[s.PrefixHave++] = data[0];
                data = data[1..];
                if (s.PrefixHave == 2)
                {
                    int length = BinaryPrimitives.ReadUInt16BigEndian(s.Prefix);
                    if (length < MinMessageLength)
                    {
                        Bad(s);
                        return;
                    }
                    s.Begin(length);
                }
                continue;
            }
            int take = Math.Min(s.Need - s.Have, data.Length);
            if (!s.Damaged)
            {
                int keep = Math.Min(take, _maxMessageBytes - s.Kept);
                if (keep > 0)
                {
                    s.Buffer ??= new byte[Math.Min(s.Need, _maxMessageBytes)];
                    data[..keep].CopyTo(s.Buffer.AsSpan(s.Kept));
                    s.Kept += keep;
                }
            }
            s.Have += take;
            data = data[take..];
            if (s.Have == s.Need)
            {
                Complete(s, onMessage);
            }
        }
    }

    // Bytes of the segment the kernel did not copy: inside a message they only shorten it; a
    // prefix among them is lost, and with it the stream's step.
    private void Hole(Stream s, int missing, DnsTcpMessageHandler onMessage)
    {
        if (s.PrefixHave == 2 && missing <= s.Need - s.Have)
        {
            s.Damaged = true;
            s.Have += missing;
            if (s.Have == s.Need)
            {
                Complete(s, onMessage);
            }
            return;
        }
        if (s.PrefixHave == 2)
        {
            Complete(s, onMessage);
        }
        Desync(s);
    }

    private void Complete(Stream s, DnsTcpMessageHandler onMessage)
    {
        Deliver(s.Buffer is null ? default : s.Buffer.AsSpan(0, s.Kept), s.Need, onMessage, split: s.SpansSegments);
        s.Reset();
    }

    private void Deliver(ReadOnlySpan<byte> message, int declaredLength, DnsTcpMessageHandler onMessage, bool split)
    {
        Interlocked.Increment(ref _messages);
        if (split)
        {
            Interlocked.Increment(ref _split);
        }
        if (message.Length < declaredLength)
        {
            Interlocked.Increment(ref _truncated);
        }
        onMessage(message, declaredLength);
    }

    private void Bad(Stream s)
    {
        Interlocked.Increment(ref _garbage);
        Desync(s);
    }

    private void Desync(Stream s)
    {
        if (s.Synced)
        {
            Interlocked.Increment(ref _skipped);
        }
        s.Synced = false;
        s.Reset();
    }

    private Stream Touch((ulong, bool) key, uint offset)
    {
        if (_streams.TryGetValue(key, out var s))
        {
            _lru.Remove(s.Node);
            _lru.AddFirst(s.Node);
            return s;
        }
        if (_streams.Count >= _maxStreams)
        {
            Remove(_lru.Last!.Value);
            Interlocked.Increment(ref _evicted);
        }
        // A stream met at its first byte starts with a length prefix; one met later does not say where messages start.
        s = new Stream(new LinkedListNode<(ulong, bool)>(key)) { Next = offset, Synced = offset == 0 };
        _lru.AddFirst(s.Node);
        _streams[key] = s;
        return s;
    }

    private void Remove((ulong, bool) key)
    {
        if (_streams.Remove(key, out var s))
        {
            _lru.Remove(s.Node);
        }
    }

    private sealed class Stream(LinkedListNode<(ulong, bool)> node)
    {
        public LinkedListNode<(ulong, bool)> Node { get; } = node;

        public uint Next;
        public bool Synced;
        public readonly byte[] Prefix = new byte[2];
        public int PrefixHave;
        public int Need;
        public int Have;
        public int Kept;
        public bool Damaged;
        public bool SpansSegments;
        public byte[]? Buffer;

        public void Begin(int length)
        {
            PrefixHave = 2;
            Need = length;
            Have = 0;
            Kept = 0;
            Damaged = false;
        }

        public void Reset()
        {
            PrefixHave = 0;
            Need = 0;
            Have = 0;
            Kept = 0;
            Damaged = false;
            SpansSegments = false;
            // A message buffer is only kept while a message is in progress: idle streams hold 2 bytes.
            Buffer = null;
        }
    }
}
