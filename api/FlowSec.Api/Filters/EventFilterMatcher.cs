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
    private readonly CompiledEventFilter[] _allow;
    private readonly CompiledEventFilter[] _deny;

    /// <summary>Compiles the lists.</summary>
    /// <exception cref="ArgumentException">A filter value cannot be understood.</exception>
    public EventFilterMatcher(IEnumerable<EventFilter> allow, IEnumerable<EventFilter> deny)
    {
        _allow = allow.Select(f => new CompiledEventFilter(f)).ToArray();
        _deny = deny.Select(f => new CompiledEventFilter(f)).ToArray();
    }

    /// <summary>The allow list, compiled: empty = everything.</summary>
    public IReadOnlyList<CompiledEventFilter> Allow => _allow;

    /// <summary>The deny list, compiled.</summary>
    public IReadOnlyList<CompiledEventFilter> Deny => _deny;

    /// <summary>True when nothing is filtered.</summary>
    public bool IsEmpty => _allow.Length == 0 && _deny.Length == 0;

    /// <summary>Whether <paramref name="e"/> passes.</summary>
    public bool Matches(Event e) =>
        (_allow.Length == 0 || _allow.Any(f => f.Matches(e))) && !_deny.Any(f => f.Matches(e));

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
            // :: is no address (storage writes an absent address as 16 zero bytes).
            if (ip is null || ip.Length is not (4 or 16) || (ip.Length == 16 && ip.Span.IndexOfAnyExcept((byte)0) < 0))
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
