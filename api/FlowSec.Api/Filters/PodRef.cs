using FlowSec.Api.V1;

namespace FlowSec.Api.Filters;

/// <summary>A pod filter value: <c>pod</c> (any namespace) or <c>namespace/pod</c> (split at the first '/').</summary>
/// <param name="Namespace">The namespace, or null for any.</param>
/// <param name="Pod">The pod name; never empty.</param>
public sealed record PodRef(string? Namespace, string Pod)
{
    /// <summary>Parses a filter value.</summary>
    /// <exception cref="ArgumentException">The pod (or the namespace before a '/') is empty.</exception>
    public static PodRef Parse(string text)
    {
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        var (ns, pod) = slash < 0 ? (null, text) : (text[..slash], text[(slash + 1)..]);
        if (pod.Length == 0 || ns is { Length: 0 })
        {
            throw new ArgumentException($"pod filter '{text}': use pod or namespace/pod");
        }
        return new PodRef(ns, pod);
    }

    /// <summary>Whether the endpoint is this pod.</summary>
    public bool Matches(Endpoint? ep) => ep is not null && ep.Pod == Pod && (Namespace is null || ep.Namespace == Namespace);
}
