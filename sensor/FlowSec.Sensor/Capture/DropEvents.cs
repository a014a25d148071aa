using FlowSec.Api.V1;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// Builds the flow event of one drained drop aggregate: the packets one 5-tuple lost for one
/// reason in one network namespace during one drain interval. Pure; no I/O.
/// </summary>
/// <remarks>
/// Source and destination are the dropped packet's own. Direction: "egress" when the packet was
/// built on this host (no input device), "ingress" when it came in through one (also when it was
/// being forwarded). The socket's cgroup id, when the skb belonged to one, goes to the local
/// side: the source for egress, the destination for ingress. No pid: drops happen in softirq.
/// Packets and bytes (from the network header on) count as "sent" by the source.
/// </remarks>
internal static class DropEvents
{
    /// <summary>The event for <paramref name="key"/> and <paramref name="stats"/>.</summary>
    public static Event Build(in FsDropKey key, in FsDropStats stats, DropReasons reasons, string node, long unixOffsetNs)
    {
        bool egress = key.direction == (byte)FlowDir.Egress;
        var source = new Endpoint
        {
            Ip = ByteString.CopyFrom(key.SourceAddress.GetAddressBytes()),
            Port = key.sport,
            CgroupId = egress ? key.cgroup_id : 0,
        };
        var destination = new Endpoint
        {
            Ip = ByteString.CopyFrom(key.DestinationAddress.GetAddressBytes()),
            Port = key.dport,
            CgroupId = egress ? 0 : key.cgroup_id,
        };
        return new Event
        {
            TimeUnixNano = (ulong)((long)stats.last_ns + unixOffsetNs),
            Node = node,
            Type = EventType.Flow,
            Capture = "bpf",
            Source = source,
            Destination = destination,
            Flow = new Flow
            {
                Protocol = ProtocolOf(key.protocol, key.family),
                State = "dropped",
                Direction = egress ? "egress" : "ingress",
                Verdict = Verdict.Dropped,
                DropReason = reasons.Name(key.reason),
                DurationNs = stats.last_ns > stats.first_ns ? stats.last_ns - stats.first_ns : 0,
                BytesSent = stats.bytes,
                PacketsSent = stats.packets,
            },
        };
    }

    /// <summary>The event model's protocol for an IP protocol number (ICMPv6 reads as ICMP).</summary>
    public static Protocol ProtocolOf(byte ipProtocol, byte family) => ipProtocol switch
    {
        6 => Protocol.Tcp,
        17 => Protocol.Udp,
        1 when family == KernelAddress.AfInet => Protocol.Icmp,
        58 when family == KernelAddress.AfInet6 => Protocol.Icmp,
        _ => Protocol.Unspecified,
    };
}
