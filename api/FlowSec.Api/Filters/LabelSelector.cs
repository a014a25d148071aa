using FlowSec.Api.V1;

namespace FlowSec.Api.Filters;

/// <summary>A label filter value: <c>key=value</c> (split at the first '=') or <c>key</c> (present with any value).</summary>
/// <param name="Key">The label key; never empty.</param>
/// <param name="Value">The value, or null for any.</param>
public sealed record LabelSelector(string Key, string? Value)
{
    /// <summary>Parses a filter value.</summary>
    /// <exception cref="ArgumentException">The key is empty.</exception>
    public static LabelSelector Parse(string text)
    {
        var eq = text.IndexOf('=', StringComparison.Ordinal);
        var key = eq < 0 ? text : text[..eq];
        if (key.Length == 0)
        {
            throw new ArgumentException($"label filter '{text}': use key=value or key");
        }
        return new LabelSelector(key, eq < 0 ? null : text[(eq + 1)..]);
    }

    /// <summary>Whether the endpoint carries this label.</summary>
    public bool Matches(Endpoint? ep) => ep is not null && ep.Labels.TryGetValue(Key, out var v) && (Value is null || v == Value);
}
