using System.Net;
using FlowSec.Api.V1;
using Google.Protobuf;

namespace FlowSec.Tests.Storage;

/// <summary>
/// Random events and filters drawn from one small vocabulary (so filters hit), with the corners
/// where SQL and C# could part: hostile strings, IPv4-mapped IPv6, no address, 0.0.0.0, case and
/// trailing dots in DNS names, non-ASCII letters, pods across namespaces, labels with '=' and quotes.
/// Events have the parts their table stores (process, file: the actor only).
/// </summary>
public sealed class FilterCorpus(int seed)
{
    private static readonly string[] Nodes = ["n1", "n2", "it's"];
    private static readonly string[] Namespaces = ["shop", "kube-system", "", "we'ird\\ns"];
    private static readonly string[] Pods = ["web-1", "db-0", "", "--;DROP", "x/y"];
    private static readonly string[] Workloads = ["web", "db", "", "nul\0w"];
    private static readonly string[] Processes = ["curl", "nginx", "", "it's \"quoted\"", "back\\slash", "nul\0tab\tnl\n", "é中😀"];
    private static readonly (string Key, string Value)[] Labels = [("app", "web"), ("app", "db"), ("tier", "front'end"), ("x\\y", ""), ("a=b", "c"), ("s\x1e", "v\x1f\x1d")];
    private static readonly string[] Addresses =
        ["10.0.0.1", "10.0.0.200", "10.1.2.3", "192.168.1.10", "0.0.0.0", "fd00::1", "2001:db8::53", "::1", "::ffff:10.0.0.5", "ffff::1", ""];
    private static readonly uint[] Ports = [0, 53, 443, 8080, 65535];
    private static readonly string[] Names =
        ["api.example.com", "API.Example.COM.", "x.example.com..", "example.com", "é.example.com", "evil'.com", "", "a.b", "odd\x1e.Example.com.", "\x1d" + "0.b"];

    private static readonly string[] CidrFilters =
        ["10.0.0.0/24", "10.0.0.0/8", "10.0.0.1", "0.0.0.0/0", "::/0", "fd00::/8", "::ffff:10.0.0.5", "2001:db8::/32", "10.0.0.128/25", "::1", "0.0.0.0", "::/1", "8000::/1"];
    private static readonly string[] PodFilters = ["web-1", "shop/web-1", "kube-system/db-0", "db-0", "--;DROP", "x/y", "shop/x/y"];
    private static readonly string[] LabelFilters = ["app", "app=web", "tier=front'end", "x\\y=", "x\\y", "a", "a=b=c", "s\x1e=v\x1f\x1d", "s\x1e"];
    private static readonly string[] DnsFilters = ["*.example.com", "api.example.com", "API.EXAMPLE.COM.", "*.com", "example.com", "É.example.com", "*.b", "evil'.com", "odd\x1e.example.com", "\x1d" + "0.b"];

    private readonly Random _random = new(seed);

    /// <summary>2026-11-22T02:00:00Z.</summary>
    public const ulong BaseNs = TestFlows.BaseNs;

    /// <summary><paramref name="count"/> events of every stored type, 1 ms apart.</summary>
    public List<Event> Events(int count) => Enumerable.Range(0, count).Select(Event).ToList();

    /// <summary>A random filter: 1–3 fields set, 1–2 values each.</summary>
    public EventFilter Filter()
    {
        var f = new EventFilter();
        var fields = 1 + _random.Next(3);
        for (var i = 0; i < fields; i++)
        {
            var n = 1 + _random.Next(2);
            switch (_random.Next(17))
            {
                case 0: f.Node.AddRange(Some(Nodes, n)); break;
                case 1: f.Namespace.AddRange(Some(Namespaces, n)); break;
                case 2: f.Pod.AddRange(Some(PodFilters, n)); break;
                case 3: f.SourcePod.AddRange(Some(PodFilters, n)); break;
                case 4: f.DestinationPod.AddRange(Some(PodFilters, n)); break;
                case 5: f.Workload.AddRange(Some(Workloads, n)); break;
                case 6: f.Label.AddRange(Some(LabelFilters, n)); break;
                case 7: f.Ip.AddRange(Some(CidrFilters, n)); break;
                case 8: f.SourceIp.AddRange(Some(CidrFilters, n)); break;
                case 9: f.DestinationIp.AddRange(Some(CidrFilters, n)); break;
                case 10: f.Port.AddRange(Some(Ports, n)); break;
                case 11: f.DestinationPort.AddRange(Some(Ports, n)); break;
                case 12: f.Protocol.AddRange(Some(Enum.GetValues<Protocol>(), n)); break;
                case 13: f.EventType.AddRange(Some(Enum.GetValues<EventType>(), n)); break;
                case 14: f.Verdict.AddRange(Some(Enum.GetValues<Verdict>(), n)); break;
                case 15: f.DnsName.AddRange(Some(DnsFilters, n)); break;
                default: f.Process.AddRange(Some(Processes, n)); break;
            }
        }
        return f;
    }

    /// <summary>Picks an index below <paramref name="max"/>.</summary>
    public int Next(int max) => _random.Next(max);

    private Event Event(int i)
    {
        EventType[] types = [EventType.Flow, EventType.Flow, EventType.Flow, EventType.Dns, EventType.Exec, EventType.Exit, EventType.File, EventType.Alert];
        var type = Pick(types);
        var e = new Event { TimeUnixNano = BaseNs + (ulong)i * 1_000_000 + (ulong)i, Node = Pick(Nodes), Type = type, Capture = "bpf", Source = Endpoint() };
        switch (type)
        {
            case EventType.Flow:
                e.Destination = Endpoint();
                e.Flow = new Flow
                {
                    Protocol = Pick(Enum.GetValues<Protocol>()),
                    Verdict = Pick(Enum.GetValues<Verdict>()),
                    BytesSent = (ulong)_random.Next(1_000_000),
                    BytesReceived = (ulong)_random.Next(1_000_000),
                };
                break;
            case EventType.Dns:
                e.Destination = Endpoint();
                e.Dns = new DnsLookup { Query = Pick(Names), Qtype = "A" };
                break;
            case EventType.Exec or EventType.Exit:
                e.Process = new ProcessInfo { Pid = 7, Exe = "/usr/bin/" + Pick(Processes) };
                break;
            case EventType.File:
                e.File = new FileActivity { Path = "/etc/" + Pick(Processes), Op = "open" };
                break;
            default:
                e.Destination = Endpoint();
                e.Alert = new Alert { Rule = "rule-" + _random.Next(3), Priority = "warning", Message = Pick(Processes) };
                break;
        }
        return e;
    }

    private Endpoint Endpoint()
    {
        var ip = Pick(Addresses);
        var ep = new Endpoint
        {
            Ip = ip.Length == 0 ? ByteString.Empty : ByteString.CopyFrom(IPAddress.Parse(ip).GetAddressBytes()),
            Port = Pick(Ports),
            Process = Pick(Processes),
            Workload = Pick(Workloads),
            Pod = Pick(Pods),
            Namespace = Pick(Namespaces),
        };
        foreach (var (key, value) in Some(Labels, _random.Next(3)))
        {
            ep.Labels[key] = value;
        }
        ep.Names.AddRange(Some(Names, _random.Next(3)));
        return ep;
    }

    private T Pick<T>(IReadOnlyList<T> values) => values[_random.Next(values.Count)];

    private T[] Some<T>(IReadOnlyList<T> values, int count) => Enumerable.Range(0, count).Select(_ => Pick(values)).ToArray();
}
