using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Flows;

/// <summary>
/// Turns what the kernel reports of TCP sockets into flow events: one per connection from its
/// close record, and "established" reports of connections that stay open past an interval, from
/// their socket-table entries, so long-lived connections are visible before they end. No I/O;
/// single-threaded: the capture's drain thread feeds it.
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
/// The close record alone carries everything a flow needs (the kernel copies the socket's entry
/// into it), so nothing is joined here; a connection whose entry was lost, or that predates the
/// sensor, still yields a flow at close, without process or start.
/// </remarks>
internal sealed class FlowAssembler
{
    private const int AddressSlotBits = 10;
    private readonly string _node;
    private readonly ulong _reportIntervalNs;
    private readonly CachedAddress[] _addresses = new CachedAddress[1 << AddressSlotBits];
    // An event handed back by Reuse: the next flow is built into its objects.
    private Event? _spare;

    /// <summary>Creates an assembler.</summary>
    /// <param name="node">Node name stamped on every event.</param>
    /// <param name="unixOffsetNs">Unix time minus CLOCK_MONOTONIC time, in ns (see <see cref="KernelClock"/>).</param>
    /// <param name="activeReportInterval">How long a connection is open before it is reported as "established".</param>
    public FlowAssembler(string node, long unixOffsetNs, TimeSpan activeReportInterval)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(activeReportInterval, TimeSpan.Zero);
        _node = node;
        UnixOffsetNs = unixOffsetNs;
        _reportIntervalNs = (ulong)activeReportInterval.Ticks * 100;
    }

    /// <summary>Unix time minus monotonic time in ns; refreshable so a wall-clock step does not persist.</summary>
    public long UnixOffsetNs { get; set; }

    /// <summary>The flow event of a connection, from its close record.</summary>
    public Event Closed(in TcpRecord close) =>
        Build(close, close.TimestampNs, CloseState(close), withCounters: true);

    /// <summary>
    /// The "established" report of a connection still open at <paramref name="nowNs"/>
    /// (CLOCK_MONOTONIC, as <see cref="KernelClock.NowNs"/> returns), decoded from its
    /// socket-table entry; null while it has been open for less than the interval. Called once per
    /// interval for every entry, this reports each long-lived connection once per interval.
    /// </summary>
    public Event? Established(in TcpRecord open, ulong nowNs) =>
        open.StartNs + _reportIntervalNs <= nowNs
            ? Build(open, nowNs, "established", withCounters: false)
            : null;

    /// <summary>
    /// Hands back an event this assembler built that nothing refers to any more (the queue encoded
    /// it at once, dropped it, or left it out of its scope): the next flow is built into its
    /// objects. Each flow was a dozen new objects (the event, its flow, two endpoints each with a
    /// label map, its dictionary and list, and a name list), the allocations behind most of the
    /// sensor's gen0 collections under connection churn (docs/benchmarks.md, issue 3, sixth session).
    /// </summary>
    public void Reuse(Event e) => _spare = e;

    private static string CloseState(in TcpRecord r) => r.OldState switch
    {
        TcpState.FinWait2 or TcpState.TimeWait or TcpState.LastAck or TcpState.Closing => "closed",
        TcpState.SynSent => r.TotalRetrans > 0 ? "timeout" : "refused",
        _ => "reset",
    };

    private Event Build(in TcpRecord r, ulong atNs, string state, bool withCounters)
    {
        // Every field is assigned (or cleared) here, since the objects may be a reused event's;
        // FlowAssemblerTests checks a reused event with every field set equals a fresh one.
        var (e, local, remote, flow) = TakeObjects();
        local.Ip = AddressBytes(r.LocalAddress);
        local.Port = r.LocalPort;
        bool owned = r.Tgid != 0;
        local.Pid = owned ? r.Tgid : 0;
        local.Process = owned ? r.Comm : "";
        local.CgroupId = owned ? r.CgroupId : 0;
        remote.Ip = AddressBytes(r.RemoteAddress);
        remote.Port = r.RemotePort;
        remote.Pid = 0;
        remote.Process = "";
        remote.CgroupId = 0;
        flow.Protocol = Protocol.Tcp;
        flow.State = state;
        flow.DurationNs = r.StartNs != 0 && atNs > r.StartNs ? atNs - r.StartNs : 0;
        flow.Verdict = Verdict.Forwarded;
        flow.DropReason = "";
        flow.SocketId = r.SockId;
        // Initiator: this host called connect(). First state SYN_RECV: it accepted. Neither: the
        // socket predates the sensor (or its owner was lost), so who connected is not known.
        bool accepted = !r.Initiator && r.FirstState == TcpState.SynRecv;
        flow.Direction = r.Initiator ? "egress" : accepted ? "ingress" : "unknown";
        // Kernel counters are the local socket's; flip them when the source is the remote peer.
        (ulong sent, ulong received) = withCounters ? PayloadBytes(r) : (0, 0);
        flow.BytesSent = accepted ? received : sent;
        flow.BytesReceived = accepted ? sent : received;
        flow.PacketsSent = !withCounters ? 0 : accepted ? r.SegsIn : r.SegsOut;
        flow.PacketsReceived = !withCounters ? 0 : accepted ? r.SegsOut : r.SegsIn;
        flow.RttUs = withCounters ? r.SrttUs : 0;
        flow.Retransmits = withCounters ? r.TotalRetrans : 0;
        e.TimeUnixNano = (ulong)((long)atNs + UnixOffsetNs);
        e.Node = _node;
        e.Type = EventType.Flow;
        e.Capture = "bpf";
        e.Source = accepted ? remote : local;
        e.Destination = accepted ? local : remote;
        e.Flow = flow;
        return e;
    }

    /// <summary>The objects of a flow event: the reused event's, cleared of what enrichment added, or new ones.</summary>
    private (Event Event, Endpoint First, Endpoint Second, Flow Flow) TakeObjects()
    {
        if (_spare is { Source: { } first, Destination: { } second, Flow: { } flow } spare)
        {
            _spare = null;
            ClearIdentity(first);
            ClearIdentity(second);
            spare.Dns = null;
            spare.Process = null;
            spare.File = null;
            spare.Alert = null;
            return (spare, first, second, flow);
        }
        _spare = null;
        return (new Event(), new Endpoint(), new Endpoint(), new Flow());
    }

    // What the enricher adds to an endpoint; Build assigns the rest.
    private static void ClearIdentity(Endpoint ep)
    {
        ep.ContainerId = "";
        ep.Workload = "";
        ep.Pod = "";
        ep.Namespace = "";
        if (ep.Labels.Count > 0)
        {
            ep.Labels.Clear();
        }
        if (ep.Names.Count > 0)
        {
            ep.Names.Clear();
        }
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

    // One ByteString per distinct address, shared by every flow that carries it (ByteString is
    // immutable): a node talks to few addresses, and a fresh copy per endpoint was two objects
    // that lived as long as their flow's batch, i.e. survived a GC each. The cache is direct-mapped
    // (a slot per hash, a colliding address replaces the other): a dictionary lookup cost about
    // as much as the copy it saved. Keyed by the address's IPv6-form value, so an IPv4 address and
    // its ::ffff:a.b.c.d form (a dual-stack socket's IPv4 peer) share a slot and bytes (4, as IPv4).
    private ByteString AddressBytes(in IpAddress16 address)
    {
        UInt128 key = address.Value;
        ulong mixed = (ulong)key ^ ((ulong)(key >> 64) * 31);
        int slot = (int)((mixed * 0x9E3779B97F4A7C15UL) >> (64 - AddressSlotBits));
        ref CachedAddress entry = ref _addresses[slot];
        if (entry.Bytes is null || entry.Key != key)
        {
            Span<byte> bytes = stackalloc byte[16];
            int written = address.WriteFlowBytes(bytes);
            entry = new CachedAddress(key, ByteString.CopyFrom(bytes[..written]));
        }
        return entry.Bytes;
    }

    private readonly record struct CachedAddress(UInt128 Key, ByteString Bytes);
}
