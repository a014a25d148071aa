using System.Text;
using FlowSec.Api.V1;

namespace FlowSec.Api.Filters;

/// <summary>
/// One <see cref="EventFilter"/>, validated and typed once: the single definition of what a filter
/// means. <see cref="Matches"/> applies it to an event (live follow); the relay turns the same typed
/// values into SQL for history, and a property test holds the two to the same answers.
/// </summary>
public sealed class CompiledEventFilter
{
    /// <summary>Longest filter value accepted, in UTF-16 code units (names, pods and labels are far shorter).</summary>
    public const int MaxValueLength = 1024;

    /// <summary>Validates and compiles <paramref name="filter"/>.</summary>
    /// <exception cref="ArgumentException">A value cannot be typed: bad CIDR, port above 65535, unknown enum value, empty pod or DNS name, over-long or invalid text.</exception>
    public CompiledEventFilter(EventFilter filter)
    {
        ArgumentNullException.ThrowIfNull(filter);
        Node = Text(filter.Node, "node");
        Namespace = Text(filter.Namespace, "namespace");
        Pod = Text(filter.Pod, "pod").Select(PodRef.Parse).ToArray();
        SourcePod = Text(filter.SourcePod, "source pod").Select(PodRef.Parse).ToArray();
        DestinationPod = Text(filter.DestinationPod, "destination pod").Select(PodRef.Parse).ToArray();
        Workload = Text(filter.Workload, "workload");
        Label = Text(filter.Label, "label").Select(LabelSelector.Parse).ToArray();
        Ip = Text(filter.Ip, "ip").Select(EventFilterMatcher.Cidr.Parse).ToArray();
        SourceIp = Text(filter.SourceIp, "source ip").Select(EventFilterMatcher.Cidr.Parse).ToArray();
        DestinationIp = Text(filter.DestinationIp, "destination ip").Select(EventFilterMatcher.Cidr.Parse).ToArray();
        Port = Ports(filter.Port, "port");
        DestinationPort = Ports(filter.DestinationPort, "destination port");
        Protocol = Enums(filter.Protocol, "protocol");
        EventType = Enums(filter.EventType, "event type");
        Verdict = Enums(filter.Verdict, "verdict");
        DnsName = Text(filter.DnsName, "DNS name").Select(DnsNamePattern.Parse).ToArray();
        Process = Text(filter.Process, "process");
    }

    /// <summary>Node names (the event's node).</summary>
    public IReadOnlyList<string> Node { get; }

    /// <summary>Namespaces, either side.</summary>
    public IReadOnlyList<string> Namespace { get; }

    /// <summary>Pods, either side.</summary>
    public IReadOnlyList<PodRef> Pod { get; }

    /// <summary>Source pods.</summary>
    public IReadOnlyList<PodRef> SourcePod { get; }

    /// <summary>Destination pods.</summary>
    public IReadOnlyList<PodRef> DestinationPod { get; }

    /// <summary>Workloads, either side.</summary>
    public IReadOnlyList<string> Workload { get; }

    /// <summary>Label selectors, either side.</summary>
    public IReadOnlyList<LabelSelector> Label { get; }

    /// <summary>Address ranges, either side.</summary>
    public IReadOnlyList<EventFilterMatcher.Cidr> Ip { get; }

    /// <summary>Source address ranges.</summary>
    public IReadOnlyList<EventFilterMatcher.Cidr> SourceIp { get; }

    /// <summary>Destination address ranges.</summary>
    public IReadOnlyList<EventFilterMatcher.Cidr> DestinationIp { get; }

    /// <summary>Ports, either side (0–65535).</summary>
    public IReadOnlyList<ushort> Port { get; }

    /// <summary>Destination ports (0–65535).</summary>
    public IReadOnlyList<ushort> DestinationPort { get; }

    /// <summary>Flow protocols (defined values only).</summary>
    public IReadOnlyList<Protocol> Protocol { get; }

    /// <summary>Event types (defined values only).</summary>
    public IReadOnlyList<EventType> EventType { get; }

    /// <summary>Flow verdicts (defined values only).</summary>
    public IReadOnlyList<Verdict> Verdict { get; }

    /// <summary>DNS name patterns: the lookup's query or a name of either endpoint.</summary>
    public IReadOnlyList<DnsNamePattern> DnsName { get; }

    /// <summary>Process names, either side.</summary>
    public IReadOnlyList<string> Process { get; }

    /// <summary>Whether <paramref name="e"/> matches: every field that is set (AND), any of its values (OR).</summary>
    public bool Matches(Event e)
    {
        var src = e.Source;
        var dst = e.Destination;
        return Any(Node, n => e.Node == n)
            && Any(Namespace, n => src?.Namespace == n || dst?.Namespace == n)
            && Any(Pod, p => p.Matches(src) || p.Matches(dst))
            && Any(SourcePod, p => p.Matches(src))
            && Any(DestinationPod, p => p.Matches(dst))
            && Any(Workload, w => src?.Workload == w || dst?.Workload == w)
            && Any(Label, l => l.Matches(src) || l.Matches(dst))
            && Any(Ip, c => c.Contains(src?.Ip) || c.Contains(dst?.Ip))
            && Any(SourceIp, c => c.Contains(src?.Ip))
            && Any(DestinationIp, c => c.Contains(dst?.Ip))
            && Any(Port, p => src?.Port == p || dst?.Port == p)
            && Any(DestinationPort, p => dst?.Port == p)
            && Any(Protocol, p => e.Flow?.Protocol == p)
            && Any(EventType, t => e.Type == t)
            && Any(Verdict, v => e.Flow?.Verdict == v)
            && Any(DnsName, n => n.Matches(e.Dns?.Query) || (src?.Names.Any(n.Matches) ?? false) || (dst?.Names.Any(n.Matches) ?? false))
            && Any(Process, p => src?.Process == p || dst?.Process == p);
    }

    private static bool Any<T>(IReadOnlyList<T> values, Func<T, bool> match)
    {
        if (values.Count == 0)
        {
            return true;
        }
        foreach (var v in values)
        {
            if (match(v))
            {
                return true;
            }
        }
        return false;
    }

    // Every text value is bounded and valid UTF-16: a lone surrogate has no UTF-8 form, so it could
    // neither be stored nor be sent to ClickHouse, and matching it live only would make history disagree.
    private static string[] Text(IEnumerable<string> values, string what) => values.Select(v =>
    {
        if (v.Length > MaxValueLength)
        {
            throw new ArgumentException($"{what} filter value is {v.Length} characters long; at most {MaxValueLength} are accepted");
        }
        if (!Utf16.IsValid(v))
        {
            throw new ArgumentException($"{what} filter value holds a lone UTF-16 surrogate");
        }
        return v;
    }).ToArray();

    private static ushort[] Ports(IEnumerable<uint> values, string what) => values.Select(p => p <= ushort.MaxValue
        ? (ushort)p
        : throw new ArgumentException($"{what} {p} is not a port (0-65535)")).ToArray();

    private static T[] Enums<T>(IEnumerable<T> values, string what)
        where T : struct, Enum => values.Select(v => Enum.IsDefined(v)
        ? v
        : throw new ArgumentException($"unknown {what} {Convert.ToInt32(v, System.Globalization.CultureInfo.InvariantCulture)}")).ToArray();

    private static class Utf16
    {
        private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

        public static bool IsValid(string s)
        {
            try
            {
                _ = Strict.GetByteCount(s);
                return true;
            }
            catch (EncoderFallbackException)
            {
                return false;
            }
        }
    }
}
