using System.Net;
using FlowSec.Api.V1;
using Google.Protobuf;

namespace FlowSec.Tests.Storage;

/// <summary>Flow events with every field set, varied, and with hostile strings where users' data goes.</summary>
public static class TestFlows
{
    /// <summary>2026-11-22T02:00:00Z in Unix nanoseconds.</summary>
    public const ulong BaseNs = 1_795_831_200UL * 1_000_000_000;

    private static readonly string[] Processes = ["curl", "nginx", "it's \"quoted\"", "back\\slash", "nul\0tab\tnl\n", "é中😀", "--;DROP"];

    /// <summary>Flow number <paramref name="i"/>, at <see cref="BaseNs"/> + i ms + i ns.</summary>
    public static Event Flow(int i)
    {
        var v6 = i % 3 == 0;
        var e = new Event
        {
            TimeUnixNano = BaseNs + (ulong)i * 1_000_000 + (ulong)i,
            Node = $"node-{i % 4}",
            Type = EventType.Flow,
            Capture = i % 5 == 0 ? "fallback" : "bpf",
            Source = new Endpoint
            {
                Ip = ByteString.CopyFrom((v6 ? IPAddress.Parse($"fd00::{i:x}") : IPAddress.Parse($"10.0.{i / 250 % 250}.{i % 250 + 1}")).GetAddressBytes()),
                Port = (uint)(30000 + i % 30000),
                Pid = (uint)(1000 + i),
                Process = Processes[i % Processes.Length],
                CgroupId = ulong.MaxValue - (ulong)i,
                ContainerId = $"c{i:x12}",
                Workload = $"web-{i % 7}",
                Pod = $"web-{i % 7}-abc{i % 11}",
                Namespace = i % 2 == 0 ? "shop" : "kube-system",
                Labels = { ["app"] = $"web-{i % 7}", ["tier"] = "front'end", ["x\\y"] = "" },
            },
            Destination = new Endpoint
            {
                Ip = ByteString.CopyFrom((v6 ? IPAddress.Parse("2001:db8::53") : IPAddress.Parse("192.168.1.10")).GetAddressBytes()),
                Port = (uint)(i % 2 == 0 ? 8080 : 443),
                Workload = i % 2 == 0 ? "api" : "",
                Pod = i % 2 == 0 ? "api-0" : "",
                Namespace = i % 2 == 0 ? "shop" : "",
                Names = { $"api-{i % 3}.shop.svc", "alias.example" },
            },
            Flow = new Flow
            {
                Protocol = (i % 3) switch { 0 => Protocol.Tcp, 1 => Protocol.Udp, _ => Protocol.Icmp },
                State = i % 4 == 0 ? "refused" : "closed",
                DurationNs = (ulong)i * 12_345,
                Direction = i % 2 == 0 ? "egress" : "ingress",
                Verdict = i % 10 == 0 ? Verdict.Dropped : Verdict.Forwarded,
                DropReason = i % 10 == 0 ? "policy" : "",
                BytesSent = i == 1 ? ulong.MaxValue : (ulong)i * 100,
                BytesReceived = (ulong)i * 1000,
                PacketsSent = (ulong)i,
                PacketsReceived = (ulong)i * 2,
                RttUs = (uint)i * 7,
                Retransmits = (uint)(i % 3),
                SocketId = 0xFFFF_0000_0000_0000UL + (ulong)i,
            },
        };
        if (i % 13 == 0)
        {
            e.Source.Labels.Clear();
            e.Destination.Names.Clear();
        }

        return e;
    }

    /// <summary>Flows 0..count-1.</summary>
    public static List<Event> Flows(int count) => Enumerable.Range(0, count).Select(Flow).ToList();
}
