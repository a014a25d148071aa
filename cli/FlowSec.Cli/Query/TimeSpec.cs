using System.Globalization;
using System.Text.RegularExpressions;

namespace FlowSec.Cli.Query;

/// <summary>Parses time arguments: a relative age ("90s", "10m", "2h", "1d") or an RFC 3339 timestamp.</summary>
public static partial class TimeSpec
{
    /// <summary>Returns the absolute time meant by <paramref name="text"/>, relative to <paramref name="now"/>.</summary>
    /// <exception cref="FormatException">The text is neither form.</exception>
    public static DateTimeOffset Parse(string text, DateTimeOffset now)
    {
        var m = Relative().Match(text);
        if (m.Success)
        {
            var amount = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            var span = m.Groups[2].Value switch
            {
                "s" => TimeSpan.FromSeconds(amount),
                "m" => TimeSpan.FromMinutes(amount),
                "h" => TimeSpan.FromHours(amount),
                _ => TimeSpan.FromDays(amount),
            };
            return now - span;
        }
        if (DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture,
                DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var absolute))
        {
            return absolute;
        }
        throw new FormatException($"'{text}' is not a time: use an age like 10m, 2h, 1d or a timestamp like 2026-11-22T02:00:00Z");
    }

    /// <summary>Nanoseconds since the Unix epoch.</summary>
    public static ulong ToUnixNano(DateTimeOffset t) => (ulong)(t.ToUnixTimeMilliseconds() * 1_000_000);

    [GeneratedRegex(@"^(\d+(?:\.\d+)?)(s|m|h|d)$")]
    private static partial Regex Relative();
}
