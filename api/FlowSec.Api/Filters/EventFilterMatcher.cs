using System.Net;
using System.Net.Sockets;
using FlowSec.Api.V1;
using Google.Protobuf;

namespace FlowSec.Api.Filters;

/// <summary>
/// Decides whether an event passes a request's allow and deny lists (Hubble's semantics: allow
/// empty or any allow filter matches, and no deny filter matches). Filters are validated and
/// compiled once: a bad CIDR or label is an <see cref="ArgumentException"/> with a clear message.
/// </summary>
public sealed class EventFilterMatcher
{
    private readonly CompiledFilter[] _allow;
    private readonly CompiledFilter[] _deny;

    /// <summary>Compiles the lists.</summary>
    /// <exception cref="ArgumentException">A filter value cannot be understood.</exception>
    public EventFilterMatcher(IEnumerable<EventFilter> allow, IEnumerable<EventFilter> deny)
    {
        _allow = allow.Select(f => new CompiledFilter(f)).ToArray();
        _deny = deny.Select(f => new CompiledFilter(f)).ToArray();
    }

    /// <summary>True when nothing is filtered.</summary>
    public bool IsEmpty => _allow.Length == 0 && _deny.Length == 0;

    /// <summary>Whether <paramref name="e"/> passes.</summary>
    public bool Matches(Event e) =>
        (_allow.Length == 0 || _allow.Any(f => f.Matches(e))) && !_deny.Any(f => f.Matches(e));

    private sealed class CompiledFilter
    {
        private readonly EventFilter _f;
        private readonly Cidr[] _ip, _sourceIp, _destinationIp;
        private readonly (string Key, string? Value)[] _labels;

        public CompiledFilter(EventFilter f)
        {
            _f = f;
            _ip = f.Ip.Select(Cidr.Parse).ToArray();
            _sourceIp = f.SourceIp.Select(Cidr.Parse).ToArray();
            _destinationIp = f.DestinationIp.Select(Cidr.Parse).ToArray();
            _labels = f.Label.Select(ParseLabel).ToArray();
            foreach (var name in f.DnsName)
            {
                if (name.Length == 0 || (name.Contains('*', StringComparison.Ordinal) && !(name.StartsWith("*.", StringComparison.Ordinal) && name.LastIndexOf('*') == 0)))
                {
                    throw new ArgumentException($"DNS name filter '{name}': use an exact name or *.suffix");
                }
            }
        }

        public bool Matches(Event e)
        {
            var src = e.Source;
            var dst = e.Destination;
            return Any(_f.Node, n => e.Node == n)
                && Any(_f.Namespace, n => src?.Namespace == n || dst?.Namespace == n)
                && Any(_f.Pod, p => PodIs(src, p) || PodIs(dst, p))
                && Any(_f.SourcePod, p => PodIs(src, p))
                && Any(_f.DestinationPod, p => PodIs(dst, p))
                && Any(_f.Workload, w => src?.Workload == w || dst?.Workload == w)
                && (_labels.Length == 0 || _labels.Any(l => HasLabel(src, l) || HasLabel(dst, l)))
                && (_ip.Length == 0 || _ip.Any(c => c.Contains(src?.Ip) || c.Contains(dst?.Ip)))
                && (_sourceIp.Length == 0 || _sourceIp.Any(c => c.Contains(src?.Ip)))
                && (_destinationIp.Length == 0 || _destinationIp.Any(c => c.Contains(dst?.Ip)))
                && Any(_f.Port, p => src?.Port == p || dst?.Port == p)
                && Any(_f.DestinationPort, p => dst?.Port == p)
                && Any(_f.Protocol, p => e.Flow?.Protocol == p)
                && Any(_f.EventType, t => e.Type == t)
                && Any(_f.Verdict, v => e.Flow?.Verdict == v)
                && Any(_f.DnsName, n => NameMatches(e.Dns?.Query, n) || (src?.Names.Any(x => NameMatches(x, n)) ?? false) ||
                                         (dst?.Names.Any(x => NameMatches(x, n)) ?? false))
                && Any(_f.Process, p => src?.Process == p || dst?.Process == p);
        }

        private static bool Any<T>(IList<T> values, Func<T, bool> match) => values.Count == 0 || values.Any(match);

        private static bool PodIs(Endpoint? ep, string pod) => ep is not null && ep.Pod.Length > 0 &&
            (pod.Contains('/', StringComparison.Ordinal) ? $"{ep.Namespace}/{ep.Pod}" == pod : ep.Pod == pod);

        private static bool HasLabel(Endpoint? ep, (string Key, string? Value) label) =>
            ep is not null && ep.Labels.TryGetValue(label.Key, out var v) && (label.Value is null || v == label.Value);

        private static (string, string?) ParseLabel(string text)
        {
            var eq = text.IndexOf('=', StringComparison.Ordinal);
            var key = eq < 0 ? text : text[..eq];
            if (key.Length == 0)
            {
                throw new ArgumentException($"label filter '{text}': use key=value or key");
            }
            return (key, eq < 0 ? null : text[(eq + 1)..]);
        }

        private static bool NameMatches(string? name, string pattern)
        {
            if (string.IsNullOrEmpty(name))
            {
                return false;
            }
            name = name.TrimEnd('.');
            return pattern.StartsWith("*.", StringComparison.Ordinal)
                ? name.EndsWith(pattern[1..], StringComparison.OrdinalIgnoreCase)
                : string.Equals(name, pattern.TrimEnd('.'), StringComparison.OrdinalIgnoreCase);
        }
    }

    /// <summary>An address range: a single address or a CIDR block.</summary>
    public readonly record struct Cidr(byte[] Network, int PrefixLength)
    {
        /// <summary>Parses "10.0.0.0/8", "fd00::/8" or a plain address.</summary>
        /// <exception cref="ArgumentException">Not an address or CIDR.</exception>
        public static Cidr Parse(string text)
        {
            var slash = text.IndexOf('/', StringComparison.Ordinal);
            if (!IPAddress.TryParse(slash < 0 ? text : text[..slash], out var address))
            {
                throw new ArgumentException($"'{text}' is not an IP address or CIDR");
            }
            var bytes = Normalize(address).GetAddressBytes();
            var prefix = bytes.Length * 8;
            if (slash >= 0 && (!int.TryParse(text.AsSpan(slash + 1), out prefix) || prefix < 0 || prefix > bytes.Length * 8))
            {
                throw new ArgumentException($"'{text}' has a bad prefix length");
            }
            return new Cidr(bytes, prefix);
        }

        /// <summary>Whether an address carried as 4 or 16 bytes is inside the range.</summary>
        public bool Contains(ByteString? ip)
        {
            if (ip is null || ip.Length is not (4 or 16))
            {
                return false;
            }
            var bytes = Normalize(new IPAddress(ip.Span)).GetAddressBytes();
            if (bytes.Length != Network.Length)
            {
                return false;
            }
            var full = PrefixLength / 8;
            if (!bytes.AsSpan(0, full).SequenceEqual(Network.AsSpan(0, full)))
            {
                return false;
            }
            var rest = PrefixLength % 8;
            return rest == 0 || (bytes[full] >> (8 - rest)) == (Network[full] >> (8 - rest));
        }

        private static IPAddress Normalize(IPAddress a) =>
            a.AddressFamily == AddressFamily.InterNetworkV6 && a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : a;
    }
}
