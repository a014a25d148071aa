using System.Net;
using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Flows;

/// <summary>
/// Joins TCP open and close records by socket into one flow event per connection, emitted at
/// close, and reports connections that stay open past an interval as "established" so
/// long-lived connections are visible before they end. Pure and single-threaded: the capture's
/// drain thread feeds it; it does no I/O.
/// </summary>
/// <remarks>
/// What the close record's previous state tells (the kernel does not say why a socket closed):
/// <list type="bullet">
/// <item>FIN_WAIT2, TIME_WAIT, LAST_ACK, CLOSING → "closed": the FIN handshake ran.</item>
/// <item>SYN_SENT → "refused" (RST answered our SYN), or "timeout" when the SYN was retransmitted,
/// i.e. the peer stayed silent until connect() gave up. An application that abandons a pending
/// connect() without retransmits also reads as "refused".</item>
/// <item>ESTABLISHED, CLOSE_WAIT, SYN_RECV, FIN_WAIT1 → "reset": closed without the FIN handshake
/// (RST sent or received, or an abort). A retransmission timeout of an established connection
/// looks the same and is reported as "reset" too.</item>
/// </list>
/// The close record alone carries everything a flow needs, so a connection whose open record
/// was evicted (or that predates the sensor) still yields a flow at close.
/// </remarks>
internal sealed class FlowAssembler
{
    private readonly Dictionary<ulong, LinkedListNode<OpenConnection>> _bySocket = new();
    // Ordered by next report time: new connections and re-reported ones go to the tail.
    private readonly LinkedList<OpenConnection> _byNextReport = new();
    private readonly string _node;
    private readonly ulong _reportIntervalNs;
    private readonly int _maxOpen;
    private long _evicted;
    private long _superseded;

    /// <summary>Creates an assembler.</summary>
    /// <param name="node">Node name stamped on every event.</param>
    /// <param name="unixOffsetNs">Unix time minus CLOCK_MONOTONIC time, in ns (see <see cref="KernelClock"/>).</param>
    /// <param name="activeReportInterval">How often a still-open connection is reported.</param>
    /// <param name="maxOpenConnections">Open connections tracked at most; the one due soonest is evicted past that.</param>
    public FlowAssembler(string node, long unixOffsetNs, TimeSpan activeReportInterval, int maxOpenConnections = 131_072)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(activeReportInterval, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxOpenConnections);
        _node = node;
        UnixOffsetNs = unixOffsetNs;
        _reportIntervalNs = (ulong)activeReportInterval.Ticks * 100;
        _maxOpen = maxOpenConnections;
    }

    /// <summary>Unix time minus monotonic time in ns; refreshable so a wall-clock step does not persist.</summary>
    public long UnixOffsetNs { get; set; }

    /// <summary>Connections currently tracked.</summary>
    public int OpenConnections => _bySocket.Count;

    /// <summary>Open connections dropped from the table because it was full (they lose periodic reports, not their flow).</summary>
    public long Evicted => Volatile.Read(ref _evicted);

    /// <summary>Open records replaced by a newer open for the same socket (the close in between was lost).</summary>
    public long Superseded => Volatile.Read(ref _superseded);

    /// <summary>Feeds one record; returns the flow event when it completes a connection.</summary>
    public Event? Add(in TcpRecord record)
    {
        if (record.Kind == RecordKind.TcpOpen)
        {
            Track(record);
            return null;
        }
        ulong startNs = record.StartNs;
        if (_bySocket.Remove(record.SockId, out var node))
        {
            _byNextReport.Remove(node);
            if (startNs == 0)
            {
                startNs = node.Value.Open.StartNs != 0 ? node.Value.Open.StartNs : node.Value.Open.TimestampNs;
            }
        }
        return Build(record, record.TimestampNs, startNs, CloseState(record), withCounters: true);
    }

    /// <summary>
    /// Reports every connection open for at least the interval since its start or last report.
    /// <paramref name="nowNs"/> is CLOCK_MONOTONIC, as <see cref="KernelClock.NowNs"/> returns.
    /// </summary>
    public IReadOnlyList<Event> Tick(long nowNs)
    {
        List<Event>? due = null;
        var now = (ulong)nowNs;
        while (_byNextReport.First is { } node && node.Value.NextReportNs <= now)
        {
            OpenConnection c = node.Value;
            ulong startNs = c.Open.StartNs != 0 ? c.Open.StartNs : c.Open.TimestampNs;
            (due ??= new()).Add(Build(c.Open, now, startNs, "established", withCounters: false));
            c.NextReportNs = now + _reportIntervalNs;
            _byNextReport.RemoveFirst();
            _byNextReport.AddLast(node);
        }
        return due ?? (IReadOnlyList<Event>)Array.Empty<Event>();
    }

    private void Track(in TcpRecord open)
    {
        if (_bySocket.Remove(open.SockId, out var stale))
        {
            _byNextReport.Remove(stale);
            _superseded++;
        }
        else if (_bySocket.Count >= _maxOpen && _byNextReport.First is { } oldest)
        {
            _bySocket.Remove(oldest.Value.Open.SockId);
            _byNextReport.RemoveFirst();
            _evicted++;
        }
        var entry = new OpenConnection(open) { NextReportNs = open.TimestampNs + _reportIntervalNs };
        _bySocket[open.SockId] = _byNextReport.AddLast(entry);
    }

    private static string CloseState(in TcpRecord r) => r.OldState switch
    {
        TcpState.FinWait2 or TcpState.TimeWait or TcpState.LastAck or TcpState.Closing => "closed",
        TcpState.SynSent => r.TotalRetrans > 0 ? "timeout" : "refused",
        _ => "reset",
    };

    private Event Build(in TcpRecord r, ulong atNs, ulong startNs, string state, bool withCounters)
    {
        var local = new Endpoint
        {
            Ip = AddressBytes(r.LocalAddress),
            Port = r.LocalPort,
        };
        if (r.Tgid != 0)
        {
            local.Pid = r.Tgid;
            local.Process = r.Comm;
            local.CgroupId = r.CgroupId;
        }
        var remote = new Endpoint
        {
            Ip = AddressBytes(r.RemoteAddress),
            Port = r.RemotePort,
        };
        var flow = new Flow
        {
            Protocol = Protocol.Tcp,
            State = state,
            DurationNs = startNs != 0 && atNs > startNs ? atNs - startNs : 0,
            Verdict = Verdict.Forwarded,
            SocketId = r.SockId,
        };
        // Initiator: this host called connect(). First state SYN_RECV: it accepted. Neither: the
        // socket predates the sensor (or its owner was lost), so who connected is not known.
        bool accepted = !r.Initiator && r.FirstState == TcpState.SynRecv;
        flow.Direction = r.Initiator ? "egress" : accepted ? "ingress" : "unknown";
        if (withCounters)
        {
            // Kernel counters are the local socket's; flip them when the source is the remote peer.
            (ulong sent, ulong received) = PayloadBytes(r);
            flow.BytesSent = accepted ? received : sent;
            flow.BytesReceived = accepted ? sent : received;
            flow.PacketsSent = accepted ? r.SegsIn : r.SegsOut;
            flow.PacketsReceived = accepted ? r.SegsOut : r.SegsIn;
            flow.RttUs = r.SrttUs;
            flow.Retransmits = r.TotalRetrans;
        }
        return new Event
        {
            TimeUnixNano = (ulong)((long)atNs + UnixOffsetNs),
            Node = _node,
            Type = EventType.Flow,
            Capture = "bpf",
            Source = accepted ? remote : local,
            Destination = accepted ? local : remote,
            Flow = flow,
        };
    }

    /// <summary>
    /// tcp_sock's bytes_acked and bytes_received count sequence space, where SYN and FIN take one
    /// byte each. Subtract them where the state at close says they were counted: the SYN when
    /// we connected and it was answered, our FIN once acknowledged (FIN_WAIT2, CLOSING,
    /// LAST_ACK, TIME_WAIT), the peer's FIN once received (CLOSE_WAIT, CLOSING, LAST_ACK,
    /// TIME_WAIT). Only FIN_WAIT2 is ambiguous (the kernel may retire the socket before the
    /// peer's FIN arrives), so there bytes received may include the peer's FIN as one byte.
    /// </summary>
    internal static (ulong Sent, ulong Received) PayloadBytes(in TcpRecord r)
    {
        ulong sent = r.BytesAcked, received = r.BytesReceived;
        if (r.Initiator && r.OldState != TcpState.SynSent)
        {
            sent = sent > 0 ? sent - 1 : 0;
        }
        if (r.OldState is TcpState.FinWait2 or TcpState.Closing or TcpState.LastAck or TcpState.TimeWait)
        {
            sent = sent > 0 ? sent - 1 : 0;
        }
        if (r.OldState is TcpState.CloseWait or TcpState.Closing or TcpState.LastAck or TcpState.TimeWait)
        {
            received = received > 0 ? received - 1 : 0;
        }
        return (sent, received);
    }

    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the flow carries them as IPv4.
    // Written through a stack buffer: GetAddressBytes and MapToIPv4 would allocate twice per endpoint.
    private static ByteString AddressBytes(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out int written);
        return ByteString.CopyFrom(address.IsIPv4MappedToIPv6 ? bytes[12..16] : bytes[..written]);
    }

    private sealed class OpenConnection(TcpRecord open)
    {
        public TcpRecord Open { get; } = open;
        public ulong NextReportNs { get; set; }
    }
}
