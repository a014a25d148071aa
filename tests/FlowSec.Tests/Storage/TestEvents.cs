using System.Net;
using FlowSec.Api.V1;
using Google.Protobuf;

namespace FlowSec.Tests.Storage;

/// <summary>
/// DNS, exec, exit and file events with every field set, varied, extreme values, and hostile
/// strings where users' data goes. Event i of kind k is at <see cref="TestFlows.BaseNs"/> + i ms +
/// k × 100 µs + i ns, so no two events of <see cref="TestFlows"/> and these share a time.
/// </summary>
public static class TestEvents
{
    /// <summary>Strings that break naive escaping: quotes, backslashes, NUL, newlines, escapes, unicode.</summary>
    public static readonly string[] Hostile =
    [
        "it's \"quoted\"", "back\\slash\\", "nul\0in\0side", "line\nbreak\r\n", "tab\there", "é中😀", "'; DROP TABLE flows; --",
        "\\x41\\0\\N", "\x01\x1f\x7f", "a\u2028b\u00a0c\uFEFF", "", "`x` {p:String} ? $1 %s", "''", "\\'",
    ];

    /// <summary>The kinds in time-offset order.</summary>
    public enum Kind
    {
        /// <summary>DNS lookup.</summary>
        Dns = 1,

        /// <summary>Process exec.</summary>
        Exec = 2,

        /// <summary>Process exit.</summary>
        Exit = 3,

        /// <summary>File activity.</summary>
        File = 4,

        /// <summary>Alert.</summary>
        Alert = 5,
    }

    /// <summary>Event number <paramref name="i"/> of <paramref name="kind"/>.</summary>
    public static Event Of(Kind kind, int i) => kind switch
    {
        Kind.Dns => Dns(i),
        Kind.Exec => Exec(i),
        Kind.Exit => Exit(i),
        _ => File(i),
    };

    /// <summary>Events 0..count-1 of every kind, interleaved in time order.</summary>
    public static List<Event> Mixed(int count) =>
        Enumerable.Range(0, count).SelectMany(i => new[] { TestFlows.Flow(i), Dns(i), Exec(i), Exit(i), File(i) }).ToList();

    /// <summary>A DNS lookup (client = source, server = destination), with 0–3 answers.</summary>
    public static Event Dns(int i)
    {
        var e = Base(Kind.Dns, i, EventType.Dns);
        e.Source = Actor(i);
        e.Source.Ip = ByteString.CopyFrom(IPAddress.Parse($"10.0.{i / 250 % 250}.{i % 250 + 1}").GetAddressBytes());
        e.Source.Port = (uint)(40000 + i % 20000);
        e.Destination = new Endpoint
        {
            Ip = ByteString.CopyFrom((i % 3 == 0 ? IPAddress.Parse("fd00::53") : IPAddress.Parse("10.96.0.10")).GetAddressBytes()),
            Port = 53,
            Workload = "coredns",
            Pod = "coredns-5d78c9869d-x2x4z",
            Namespace = "kube-system",
            Labels = { ["k8s-app"] = "kube-dns" },
        };
        e.Dns = new DnsLookup
        {
            Query = i % 4 == 0 ? Hostile[i / 4 % Hostile.Length] + ".evil.example" : $"api-{i % 5}.shop.svc.cluster.local",
            Qtype = i % 2 == 0 ? "A" : "AAAA",
            Rcode = i % 7 == 0 ? "NXDOMAIN" : "NOERROR",
            LatencyUs = i == 1 ? ulong.MaxValue : (ulong)i * 31,
            Id = i == 2 ? uint.MaxValue : (uint)(i * 7919 % 65536),
            IsResponse = i % 3 != 1,
        };
        for (var a = 0; a < i % 4; a++)
        {
            e.Dns.Answers.Add(new DnsAnswer
            {
                Name = a == 0 ? e.Dns.Query : $"alias-{a}.{Hostile[(i + a) % Hostile.Length]}",
                Type = a == 0 ? "CNAME" : e.Dns.Qtype,
                Data = a == 2 ? "fd00::1:" + a : $"10.1.{a}.{i % 250}",
                Ttl = a == 1 ? uint.MaxValue : (uint)(30 * a),
            });
        }

        return e;
    }

    /// <summary>A process exec: argv with hostile and empty arguments.</summary>
    public static Event Exec(int i)
    {
        var e = Base(Kind.Exec, i, EventType.Exec);
        e.Source = Actor(i);
        e.Process = new ProcessInfo
        {
            Pid = (uint)(5000 + i),
            Ppid = (uint)(4000 + i % 17),
            Uid = i % 5 == 0 ? uint.MaxValue : (uint)(i % 3) * 1000,
            Exe = i % 6 == 0 ? "/tmp/" + Hostile[i / 6 % Hostile.Length] : "/usr/bin/curl",
            ParentExe = i % 2 == 0 ? "/bin/sh" : "/usr/sbin/nginx",
            Args = { "curl", "-H", Hostile[i % Hostile.Length], "", $"https://api-{i % 5}/", Hostile[(i + 3) % Hostile.Length] },
        };
        if (i % 9 == 0)
        {
            e.Process.Args.Clear();
        }

        return e;
    }

    /// <summary>A process exit: code and lifetime, extremes included.</summary>
    public static Event Exit(int i)
    {
        var e = Base(Kind.Exit, i, EventType.Exit);
        e.Source = Actor(i);
        e.Process = new ProcessInfo
        {
            Pid = (uint)(5000 + i),
            Ppid = (uint)(4000 + i % 17),
            Uid = (uint)(i % 3) * 1000,
            Exe = "/usr/bin/curl",
            ExitCode = (i % 4) switch { 0 => 0, 1 => -9, 2 => int.MinValue, _ => int.MaxValue },
            LifetimeNs = i == 3 ? ulong.MaxValue : (ulong)i * 1_000_003,
        };
        return e;
    }

    /// <summary>A file event: hostile and long paths, renames with a new path, negative results.</summary>
    public static Event File(int i)
    {
        var e = Base(Kind.File, i, EventType.File);
        e.Source = Actor(i);
        var op = (i % 5) switch { 0 => "open", 1 => "create", 2 => "write", 3 => "unlink", _ => "rename" };
        e.File = new FileActivity
        {
            Path = i % 11 == 0 ? "/" + new string('d', 4000) + "/x" : $"/etc/{Hostile[i % Hostile.Length]}/{i}",
            Op = op,
            Flags = i == 4 ? uint.MaxValue : (uint)(i % 3 == 0 ? 0x241 : 0),
            Result = i % 6 == 0 ? -13 : i % 6 == 1 ? int.MinValue : 3 + i % 100,
            NewPath = op == "rename" ? "/tmp/" + Hostile[(i + 5) % Hostile.Length] : "",
        };
        return e;
    }

    /// <summary>An alert about the actor (source) and a peer, with hostile rule names and messages.</summary>
    public static Event Alert(int i)
    {
        var e = Base(Kind.Alert, i, EventType.Alert);
        e.Source = Actor(i);
        e.Destination = new Endpoint { Ip = ByteString.CopyFrom(IPAddress.Parse("192.168.1.10").GetAddressBytes()), Port = (uint)(i % 3 == 0 ? 4444 : 443) };
        e.Alert = new Alert
        {
            Rule = i % 3 == 0 ? "Outbound to a disallowed port" : Hostile[i % Hostile.Length],
            Priority = i % 2 == 0 ? "warning" : "critical",
            Message = $"{Hostile[(i + 1) % Hostile.Length]} (pid {5000 + i})",
        };
        return e;
    }

    private static Event Base(Kind kind, int i, EventType type) => new()
    {
        TimeUnixNano = TestFlows.BaseNs + (ulong)i * 1_000_000 + (ulong)kind * 100_000 + (ulong)i,
        Node = $"node-{i % 4}",
        Type = type,
        Capture = i % 5 == 0 ? "fallback" : "bpf",
    };

    // The actor of a process or file event: no address, a container's identity and labels.
    private static Endpoint Actor(int i)
    {
        var ep = new Endpoint
        {
            Pid = (uint)(5000 + i),
            Process = i % 8 == 0 ? Hostile[i / 8 % Hostile.Length] : "curl",
            CgroupId = ulong.MaxValue - (ulong)i,
            ContainerId = $"c{i:x12}",
            Workload = $"web-{i % 7}",
            Pod = $"web-{i % 7}-abc{i % 11}",
            Namespace = i % 2 == 0 ? "shop" : "kube-system",
            Labels = { ["app"] = $"web-{i % 7}", ["tier"] = "front'end", ["x\\y"] = "" },
            Names = { "web.shop.svc" },
        };
        if (i % 13 == 0)
        {
            ep.Labels.Clear();
            ep.Names.Clear();
        }

        return ep;
    }
}
