using System.Net;
using FlowSec.Api.V1;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Dns;

/// <summary>One DNS message seen on a local socket (decoded from a kernel record, or made by a test).</summary>
/// <param name="TimestampNs">When it was seen, CLOCK_MONOTONIC ns.</param>
/// <param name="Egress">True when a local socket sent it, false when one received it.</param>
/// <param name="Source">Packet source address.</param>
/// <param name="SourcePort">Packet source port.</param>
/// <param name="Destination">Packet destination address.</param>
/// <param name="DestinationPort">Packet destination port.</param>
/// <param name="Tgid">Process owning the local socket; 0 when not known.</param>
/// <param name="Comm">That process's name; empty when not known.</param>
/// <param name="CgroupId">cgroup v2 id of the local socket; 0 when not known.</param>
/// <param name="MessageLength">The message's length on the wire (may exceed the bytes captured).</param>
/// <param name="Transport"><see cref="Udp"/> or <see cref="Tcp"/>.</param>
/// <param name="SocketCookie">The local socket's cookie (names a TCP connection's streams).</param>
/// <param name="TcpOffset">TCP: where the segment starts in its direction's byte stream.</param>
internal readonly record struct DnsObservation(
    long TimestampNs,
    bool Egress,
    IPAddress Source,
    ushort SourcePort,
    IPAddress Destination,
    ushort DestinationPort,
    uint Tgid,
    string Comm,
    ulong CgroupId,
    int MessageLength,
    string Transport = DnsObservation.Udp,
    ulong SocketCookie = 0,
    uint TcpOffset = 0)
{
    /// <summary>DNS over UDP (<see cref="Transport"/>).</summary>
    public const string Udp = "udp";

    /// <summary>DNS over TCP: the record is a segment, <see cref="MessageLength"/> its payload length, until framing makes messages of it.</summary>
    public const string Tcp = "tcp";
}

/// <summary>
/// Pairs DNS queries with their responses and turns each lookup into one <see cref="Event"/> of
/// type DNS. Single-threaded: the DNS capture's drain thread calls <see cref="Observe"/> and
/// <see cref="Tick"/>.
/// </summary>
/// <remarks>
/// <para>A transaction is keyed by (client address, client port, server address, server port,
/// DNS id): the server is part of it so that one id sent to two servers (as resolvers with
/// several nameservers do) stays two transactions. A response matches only when
/// it repeats the query's question, as a resolver would require.</para>
/// <para>When both ends are on this node each message is seen twice (sent, then received): the
/// sightings merge into one transaction, each adding what it knows of its own side (process on
/// egress, socket cgroup on both). Latency runs from the first sighting of the query to the first
/// of the response, i.e. the client's view when the client is local, the server's processing time
/// when only the server is.</para>
/// <para>Emitted: one event per response (latency from its query; 0 when no query was seen), and
/// one per query left unanswered for the timeout (rcode "TIMEOUT", is_response false). A query on
/// its own is not emitted: the response or the timeout carries it, so a lookup is one row, not two.
/// A response that is not well-formed DNS (beyond the capture's own 512-byte cut) is emitted with
/// rcode "MALFORMED" and the answers read before the problem. Answered transactions linger briefly
/// so the second sighting of a response is recognised as such instead of emitted again.</para>
/// <para>Bounded: at most <c>capacity</c> transactions; past it the oldest is dropped and
/// counted in <see cref="Evicted"/>.</para>
/// </remarks>
internal sealed class DnsTransactionTracker
{
    /// <summary>Pseudo-rcode of a query that got no response in time.</summary>
    public const string TimeoutRcode = "TIMEOUT";

    /// <summary>Pseudo-rcode of a response that is not well-formed DNS.</summary>
    public const string MalformedRcode = "MALFORMED";

    private readonly Dictionary<Key, Transaction> _table = new();
    // Expiry order (insertion order; every entry's deadline is within one timeout of its insertion).
    private readonly Queue<(Key Key, Transaction Transaction, long ExpiresNs)> _expiry = new();
    private readonly string _node;
    private readonly long _timeoutNs;
    private readonly long _lingerNs;
    private readonly int _capacity;
    private readonly Action<Event> _emit;
    private readonly DnsNameCache? _names;
    private long _queries, _responses, _emitted, _unanswered, _unmatched, _evicted, _duplicates, _malformed, _cut;

    /// <summary>Creates a tracker that hands events to <paramref name="emit"/> and teaches <paramref name="names"/>.</summary>
    public DnsTransactionTracker(string node, TimeSpan queryTimeout, int capacity, Action<Event> emit, DnsNameCache? names = null, TimeSpan? linger = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        _node = node;
        _timeoutNs = queryTimeout.Ticks * 100;
        _lingerNs = (linger ?? TimeSpan.FromSeconds(2)).Ticks * 100;
        _capacity = capacity;
        _emit = emit;
        _names = names;
    }

    /// <summary>Unix time minus monotonic time, ns: converts kernel timestamps for events.</summary>
    public long UnixOffsetNs { get; set; }

    /// <summary>Distinct queries seen.</summary>
    public long Queries => Interlocked.Read(ref _queries);

    /// <summary>Distinct responses seen (a second sighting of the same response is not counted).</summary>
    public long Responses => Interlocked.Read(ref _responses);

    /// <summary>Events emitted.</summary>
    public long Emitted => Interlocked.Read(ref _emitted);

    /// <summary>Queries that timed out without a response (each emitted as "TIMEOUT").</summary>
    public long Unanswered => Interlocked.Read(ref _unanswered);

    /// <summary>Responses with no matching query (emitted with latency 0).</summary>
    public long Unmatched => Interlocked.Read(ref _unmatched);

    /// <summary>Pending queries dropped because the table was full (not emitted).</summary>
    public long Evicted => Interlocked.Read(ref _evicted);

    /// <summary>Second sightings of a query or response (both ends on this node).</summary>
    public long Duplicates => Interlocked.Read(ref _duplicates);

    /// <summary>Messages that were not well-formed DNS.</summary>
    public long Malformed => Interlocked.Read(ref _malformed);

    /// <summary>Messages longer than the capture limit, parsed as far as captured.</summary>
    public long CaptureTruncated => Interlocked.Read(ref _cut);

    /// <summary>Transactions currently tracked.</summary>
    public int Tracked => _table.Count;

    /// <summary>Takes one sighting of a DNS message; <paramref name="message"/> is what was captured of it.</summary>
    public void Observe(in DnsObservation o, ReadOnlySpan<byte> message)
    {
        if (!DnsParser.TryReadHeader(message, out var header))
        {
            Interlocked.Increment(ref _malformed);
            return;
        }
        bool cut = message.Length < o.MessageLength;
        if (cut)
        {
            Interlocked.Increment(ref _cut);
        }
        if (header.IsResponse)
        {
            OnResponse(o, message, cut);
        }
        else
        {
            OnQuery(o, message, cut);
        }
    }

    /// <summary>Emits timeouts and forgets answered transactions whose linger has passed.</summary>
    public void Tick(long nowNs)
    {
        while (_expiry.TryPeek(out var head))
        {
            if (!IsCurrent(head))
            {
                _expiry.Dequeue();
                continue;
            }
            if (head.ExpiresNs > nowNs)
            {
                break;
            }
            _expiry.Dequeue();
            _table.Remove(head.Key);
            var t = head.Transaction;
            if (!t.Answered)
            {
                Interlocked.Increment(ref _unanswered);
                var timeout = Build(t, t.QueryNs + _timeoutNs, TimeoutRcode, null, (ulong)(_timeoutNs / 1000), isResponse: false);
                Emit(timeout);
            }
        }
    }

    private void OnQuery(in DnsObservation o, ReadOnlySpan<byte> message, bool cut)
    {
        var query = DnsParser.Parse(message, maxAnswers: 0);
        if (IsMalformed(query, cut))
        {
            Interlocked.Increment(ref _malformed);
        }
        var key = new Key(o.Source, o.SourcePort, o.Destination, o.DestinationPort, query.Header.Id);
        if (_table.TryGetValue(key, out var known) && !known.Answered)
        {
            Interlocked.Increment(ref _duplicates);
            Attribute(known, o, localIsClient: o.Egress);
            return;
        }
        Interlocked.Increment(ref _queries);
        var t = new Transaction(o.Source, o.SourcePort, o.Destination, o.DestinationPort, query.Header.Id, o.TimestampNs)
        {
            HasQuestion = query.HasQuestion,
            QueryName = query.QuestionName,
            QueryType = query.QuestionType,
            Transport = o.Transport,
        };
        Attribute(t, o, localIsClient: o.Egress);
        Insert(key, t, o.TimestampNs + _timeoutNs);
    }

    private void OnResponse(in DnsObservation o, ReadOnlySpan<byte> message, bool cut)
    {
        var response = DnsParser.Parse(message);
        bool malformed = IsMalformed(response, cut);
        var key = new Key(o.Destination, o.DestinationPort, o.Source, o.SourcePort, response.Header.Id);
        int hash = Hash(message);
        string rcode = malformed ? MalformedRcode : DnsNames.RcodeName(response.Rcode);
        bool localIsClient = !o.Egress;

        if (_table.TryGetValue(key, out var t) && SameQuestion(t, response))
        {
            Attribute(t, o, localIsClient);
            if (t.Answered && t.ResponseHash == hash)
            {
                Interlocked.Increment(ref _duplicates);
                return;
            }
            CountResponse(malformed);
            if (!t.Answered)
            {
                t.Answered = true;
                // Keep it a little longer to recognise the other end's sighting of this response.
                Reschedule(key, t, o.TimestampNs + _lingerNs);
            }
            // A different second response (a retransmitted query answered twice, or a spoofing race) is
            // emitted too; remembering the latest lets its own second sighting be recognised.
            t.ResponseHash = hash;
            long latencyNs = t.Matched ? o.TimestampNs - t.QueryNs : 0;
            Emit(Build(t, o.TimestampNs, rcode, response, latencyNs > 0 ? (ulong)((latencyNs + 999) / 1000) : 0, isResponse: true));
            if (!malformed && t.Matched)
            {
                // Only answers to a query we saw teach names: an unsolicited response cannot plant them.
                _names?.Learn(response);
            }
            return;
        }

        CountResponse(malformed);
        Interlocked.Increment(ref _unmatched);
        var orphan = new Transaction(o.Destination, o.DestinationPort, o.Source, o.SourcePort, response.Header.Id, queryNs: 0)
        {
            HasQuestion = response.HasQuestion,
            QueryName = response.QuestionName,
            QueryType = response.QuestionType,
            Matched = false,
            Answered = true,
            ResponseHash = hash,
            Transport = o.Transport,
        };
        Attribute(orphan, o, localIsClient);
        Emit(Build(orphan, o.TimestampNs, rcode, response, 0, isResponse: true));
        if (!_table.ContainsKey(key))
        {
            // Remembered only so its second sighting on this node is not emitted again.
            Insert(key, orphan, o.TimestampNs + _lingerNs);
        }
    }

    private void CountResponse(bool malformed)
    {
        Interlocked.Increment(ref _responses);
        if (malformed)
        {
            Interlocked.Increment(ref _malformed);
        }
    }

    // What the capture cut off is not the sender's fault.
    private static bool IsMalformed(DnsMessage m, bool cut) =>
        m.Malformed != DnsMalformation.None
        && !(cut && m.Malformed is DnsMalformation.Truncated or DnsMalformation.CountExceedsPacket);

    private static bool SameQuestion(Transaction t, DnsMessage response) =>
        !t.HasQuestion || !response.HasQuestion
        || (t.QueryType == response.QuestionType && string.Equals(t.QueryName, response.QuestionName, StringComparison.Ordinal));

    private static int Hash(ReadOnlySpan<byte> message)
    {
        var hash = new HashCode();
        hash.AddBytes(message);
        return hash.ToHashCode();
    }

    private static void Attribute(Transaction t, in DnsObservation o, bool localIsClient)
    {
        var side = localIsClient ? t.Client : t.Server;
        if (o.Tgid != 0 && side.Pid == 0)
        {
            side.Pid = o.Tgid;
            side.Process = o.Comm;
        }
        if (o.CgroupId != 0 && side.CgroupId == 0)
        {
            side.CgroupId = o.CgroupId;
        }
    }

    private void Insert(Key key, Transaction t, long expiresNs)
    {
        while (_table.Count >= _capacity && _expiry.TryDequeue(out var oldest))
        {
            if (IsCurrent(oldest))
            {
                _table.Remove(oldest.Key);
                if (!oldest.Transaction.Answered)
                {
                    Interlocked.Increment(ref _evicted);
                }
            }
        }
        _table[key] = t;
        Reschedule(key, t, expiresNs);
    }

    private void Reschedule(Key key, Transaction t, long expiresNs)
    {
        t.ExpiresNs = expiresNs;
        _expiry.Enqueue((key, t, expiresNs));
    }

    // A queue entry is stale once its transaction was replaced or rescheduled.
    private bool IsCurrent((Key Key, Transaction Transaction, long ExpiresNs) entry) =>
        entry.Transaction.ExpiresNs == entry.ExpiresNs
        && _table.TryGetValue(entry.Key, out var current) && ReferenceEquals(current, entry.Transaction);

    private Event Build(Transaction t, long atNs, string rcode, DnsMessage? response, ulong latencyUs, bool isResponse)
    {
        var lookup = new DnsLookup
        {
            Query = t.QueryName,
            Qtype = t.HasQuestion ? DnsNames.TypeName(t.QueryType) : "",
            Rcode = rcode,
            LatencyUs = latencyUs,
            Id = t.Id,
            IsResponse = isResponse,
            Transport = t.Transport,
        };
        if (response is not null)
        {
            foreach (var answer in response.Answers)
            {
                lookup.Answers.Add(new FlowSec.Api.V1.DnsAnswer
                {
                    Name = answer.Name,
                    Type = DnsNames.TypeName(answer.Type),
                    Data = answer.Data,
                    Ttl = answer.Ttl,
                });
            }
        }
        return new Event
        {
            TimeUnixNano = (ulong)(atNs + UnixOffsetNs),
            Node = _node,
            Type = EventType.Dns,
            Capture = "bpf",
            Source = t.Client.ToEndpoint(),
            Destination = t.Server.ToEndpoint(),
            Dns = lookup,
        };
    }

    private void Emit(Event e)
    {
        Interlocked.Increment(ref _emitted);
        _emit(e);
    }

    private readonly record struct Key(IPAddress Client, ushort ClientPort, IPAddress Server, ushort ServerPort, ushort Id);

    private sealed class Side(IPAddress ip, ushort port)
    {
        public uint Pid;
        public string Process = "";
        public ulong CgroupId;

        public Endpoint ToEndpoint() => new()
        {
            Ip = ByteString.CopyFrom(ip.GetAddressBytes()),
            Port = port,
            Pid = Pid,
            Process = Process,
            CgroupId = CgroupId,
        };
    }

    private sealed class Transaction(IPAddress client, ushort clientPort, IPAddress server, ushort serverPort, ushort id, long queryNs)
    {
        public Side Client { get; } = new(client, clientPort);
        public Side Server { get; } = new(server, serverPort);
        public ushort Id { get; } = id;
        public long QueryNs { get; } = queryNs;
        public bool Matched { get; init; } = true;
        public bool HasQuestion { get; init; }
        public string QueryName { get; init; } = "";
        public ushort QueryType { get; init; }
        public string Transport { get; init; } = DnsObservation.Udp;
        public bool Answered { get; set; }
        public int ResponseHash { get; set; }
        public long ExpiresNs { get; set; }
    }
}
