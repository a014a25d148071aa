using System.Runtime.InteropServices;
using FlowSec.Api.V1;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// Turns drains of the kernel's <c>udp_flows</c> map into flow events: one per flow per drain in
/// which it carried traffic, with the bytes and packets since its previous event (so summing a
/// flow's events gives its totals). Kernel entries keep running totals and are only deleted once
/// idle, so a flow keeps its start time and its direction across intervals; this table remembers
/// what was already reported per entry. Pure and single-threaded: the capture's drain loop feeds
/// it; it does no I/O.
/// </summary>
/// <remarks>
/// Direction is decided by the first packet the kernel saw for the entry: sent by the local socket →
/// "egress" (source = local endpoint), received → "ingress" (source = remote endpoint). A flow that
/// predates the sensor, or resumes after its entry was deleted as idle, takes the direction of
/// its first packet since then. Bytes are UDP payload bytes, source → destination as "sent".
/// The local endpoint carries the socket's cgroup id but no pid: cgroup_skb programs run in softirq
/// context for received packets, where the current task is unrelated (the attribution layer names
/// the workload from the cgroup id).
/// </remarks>
internal sealed class UdpFlowTable
{
    private readonly Dictionary<FsUdpFlowKey, Reported> _flows = new();
    private readonly string _node;
    private readonly ulong _idleNs;
    private long _pass;
    private long _entriesSeen;
    private long _evicted;
    private long _expired;

    /// <summary>Creates a table.</summary>
    /// <param name="node">Node name stamped on every event.</param>
    /// <param name="unixOffsetNs">Unix time minus CLOCK_MONOTONIC time, in ns.</param>
    /// <param name="idleTimeout">A kernel entry without packets for longer than this is deleted.</param>
    public UdpFlowTable(string node, long unixOffsetNs, TimeSpan idleTimeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(idleTimeout, TimeSpan.Zero);
        _node = node;
        UnixOffsetNs = unixOffsetNs;
        _idleNs = (ulong)idleTimeout.Ticks * 100;
    }

    /// <summary>Unix time minus monotonic time in ns; refreshable so a wall-clock step does not persist.</summary>
    public long UnixOffsetNs { get; set; }

    /// <summary>Kernel entries (flow incarnations) seen by a drain; compare with the kernel's insert counter.</summary>
    public long EntriesSeen => Volatile.Read(ref _entriesSeen);

    /// <summary>Entries that vanished from the kernel map between drains (LRU eviction): traffic since their last event is lost.</summary>
    public long Evicted => Volatile.Read(ref _evicted);

    /// <summary>Entries deleted because they were idle.</summary>
    public long Expired => Volatile.Read(ref _expired);

    /// <summary>Flows currently remembered.</summary>
    public int Count => _flows.Count;

    /// <summary>Starts a drain: entries not observed until <see cref="EndPass"/> count as evicted.</summary>
    public void BeginPass() => _pass++;

    /// <summary>
    /// Feeds one kernel entry; returns an event when it carried traffic since its last one.
    /// <paramref name="idle"/> says the entry should be deleted (then call <see cref="Remove"/>
    /// with what the deletion returned).
    /// </summary>
    public Event? Observe(in FsUdpFlowKey key, in FsUdpFlowStats stats, long nowNs, out bool idle)
    {
        ref Reported reported = ref CollectionsMarshal.GetValueRefOrAddDefault(_flows, key, out bool known);
        if (!known || !SameIncarnation(reported, stats))
        {
            if (known)
            {
                // The entry we knew was evicted and the flow came back between two drains.
                _evicted++;
            }
            _entriesSeen++;
            reported = new Reported { FirstNs = stats.first_ns };
        }
        reported.Pass = _pass;
        ulong now = (ulong)nowNs;
        idle = now > stats.last_ns && now - stats.last_ns > _idleNs;
        return Report(ref reported, key, stats);
    }

    /// <summary>
    /// An idle entry was deleted from the kernel map; <paramref name="final"/> is what the atomic
    /// lookup-and-delete returned, so packets that arrived after the drain read it still count.
    /// </summary>
    public Event? Remove(in FsUdpFlowKey key, in FsUdpFlowStats final)
    {
        _expired++;
        if (_flows.Remove(key, out Reported reported) && SameIncarnation(reported, final))
        {
            return Report(ref reported, key, final);
        }
        // Evicted and recreated between the read and the delete: the deleted entry is new to us.
        if (reported.FirstNs != 0)
        {
            _evicted++;
        }
        _entriesSeen++;
        reported = new Reported { FirstNs = final.first_ns };
        return Report(ref reported, key, final);
    }

    /// <summary>An idle entry was already gone when deleted (evicted in between).</summary>
    public void Forget(in FsUdpFlowKey key)
    {
        if (_flows.Remove(key))
        {
            _evicted++;
        }
    }

    /// <summary>Ends a drain: remembered flows the kernel no longer has were evicted. Returns how many.</summary>
    public int EndPass()
    {
        List<FsUdpFlowKey>? gone = null;
        foreach (var (key, reported) in _flows)
        {
            if (reported.Pass != _pass)
            {
                (gone ??= new()).Add(key);
            }
        }
        foreach (var key in gone ?? [])
        {
            _flows.Remove(key);
        }
        _evicted += gone?.Count ?? 0;
        return gone?.Count ?? 0;
    }

    // A new incarnation restarts at first_ns; totals never shrink within one.
    private static bool SameIncarnation(in Reported r, in FsUdpFlowStats s) =>
        r.FirstNs == s.first_ns
        && s.bytes_egress >= r.BytesEgress && s.bytes_ingress >= r.BytesIngress
        && s.packets_egress >= r.PacketsEgress && s.packets_ingress >= r.PacketsIngress;

    private Event? Report(ref Reported reported, in FsUdpFlowKey key, in FsUdpFlowStats stats)
    {
        ulong packetsEgress = stats.packets_egress - reported.PacketsEgress;
        ulong packetsIngress = stats.packets_ingress - reported.PacketsIngress;
        if (packetsEgress == 0 && packetsIngress == 0)
        {
            return null;
        }
        ulong bytesEgress = stats.bytes_egress - reported.BytesEgress;
        ulong bytesIngress = stats.bytes_ingress - reported.BytesIngress;
        reported.BytesEgress = stats.bytes_egress;
        reported.BytesIngress = stats.bytes_ingress;
        reported.PacketsEgress = stats.packets_egress;
        reported.PacketsIngress = stats.packets_ingress;

        var local = new Endpoint
        {
            Ip = ByteString.CopyFrom(key.LocalAddress.GetAddressBytes()),
            Port = key.local_port,
            CgroupId = key.cgroup_id,
        };
        var remote = new Endpoint
        {
            Ip = ByteString.CopyFrom(key.RemoteAddress.GetAddressBytes()),
            Port = key.remote_port,
        };
        bool ingress = stats.first_dir == (byte)FlowDir.Ingress;
        return new Event
        {
            TimeUnixNano = (ulong)((long)stats.last_ns + UnixOffsetNs),
            Node = _node,
            Type = EventType.Flow,
            Capture = "bpf",
            Source = ingress ? remote : local,
            Destination = ingress ? local : remote,
            Flow = new Flow
            {
                Protocol = Protocol.Udp,
                State = "active",
                Direction = ingress ? "ingress" : "egress",
                Verdict = Verdict.Forwarded,
                DurationNs = stats.last_ns > stats.first_ns ? stats.last_ns - stats.first_ns : 0,
                BytesSent = ingress ? bytesIngress : bytesEgress,
                BytesReceived = ingress ? bytesEgress : bytesIngress,
                PacketsSent = ingress ? packetsIngress : packetsEgress,
                PacketsReceived = ingress ? packetsEgress : packetsIngress,
            },
        };
    }

    private struct Reported
    {
        public ulong FirstNs;
        public ulong BytesEgress;
        public ulong BytesIngress;
        public ulong PacketsEgress;
        public ulong PacketsIngress;
        public long Pass;
    }
}
