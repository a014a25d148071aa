namespace FlowSec.Api.Filters;

/// <summary>
/// A DNS name filter value: an exact name, or <c>*.suffix</c> for any name below the suffix.
/// Comparison ignores ASCII case only (DNS's rule, and what ClickHouse's <c>lower</c> does) and
/// trailing dots on both sides (<c>example.com.</c> is <c>example.com</c>).
/// </summary>
public sealed record DnsNamePattern
{
    private DnsNamePattern(string name, bool isSuffix)
    {
        Name = name;
        IsSuffix = isSuffix;
    }

    /// <summary>
    /// The name in canonical form (ASCII lower case, no trailing dots); for a suffix pattern, with
    /// its leading dot (<c>*.example.com</c> → <c>.example.com</c>), so matching is "ends with".
    /// </summary>
    public string Name { get; }

    /// <summary>True for <c>*.suffix</c>.</summary>
    public bool IsSuffix { get; }

    /// <summary>Parses a filter value.</summary>
    /// <exception cref="ArgumentException">Empty, or a '*' anywhere but a leading <c>*.</c>.</exception>
    public static DnsNamePattern Parse(string text)
    {
        var isSuffix = text.StartsWith("*.", StringComparison.Ordinal);
        var name = Canonical(isSuffix ? text[2..] : text);
        if (name.Length == 0 || name.Contains('*', StringComparison.Ordinal))
        {
            throw new ArgumentException($"DNS name filter '{text}': use an exact name or *.suffix");
        }
        return new DnsNamePattern(isSuffix ? "." + name : name, isSuffix);
    }

    /// <summary>Whether <paramref name="name"/> (a query or an endpoint's resolved name) matches.</summary>
    public bool Matches(string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return false;
        }
        var canonical = Canonical(name);
        return IsSuffix ? canonical.EndsWith(Name, StringComparison.Ordinal) : canonical == Name;
    }

    /// <summary>ASCII lower case, trailing dots removed.</summary>
    public static string Canonical(string name)
    {
        var trimmed = name.TrimEnd('.');
        return string.Create(trimmed.Length, trimmed, (span, s) =>
        {
            for (var i = 0; i < s.Length; i++)
            {
                span[i] = char.IsAsciiLetterUpper(s[i]) ? (char)(s[i] | 0x20) : s[i];
            }
        });
    }
}
