using System.Net;
using System.Text.RegularExpressions;

namespace FlowSec.Relay.Storage;

/// <summary>A query or insert that ClickHouse refused, or a ClickHouse that could not be reached.</summary>
public sealed partial class ClickHouseException : Exception
{
    /// <summary>Creates the exception.</summary>
    public ClickHouseException(string message, int? code = null, HttpStatusCode? status = null, Exception? inner = null)
        : base(message, inner)
    {
        Code = code;
        Status = status;
    }

    /// <summary>ClickHouse's error code (e.g. 60 = unknown table), when the server answered with one.</summary>
    public int? Code { get; }

    /// <summary>The HTTP status, when the server answered at all.</summary>
    public HttpStatusCode? Status { get; }

    /// <summary>
    /// Builds the exception from an error body. 18.16 writes
    /// <c>Code: 60, e.displayText() = DB::Exception: Table x doesn't exist., e.what() = DB::Exception</c>;
    /// current releases write <c>Code: 60. DB::Exception: Table x doesn't exist. (UNKNOWN_TABLE) (version …)</c>.
    /// </summary>
    public static ClickHouseException FromResponse(HttpStatusCode? status, string body)
    {
        var match = ErrorPattern().Match(body);
        if (!match.Success)
        {
            var text = body.Trim();
            return new ClickHouseException(
                $"ClickHouse answered HTTP {(int?)status}: {(text.Length > 500 ? text[..500] + "…" : text)}", null, status);
        }

        var code = int.Parse(match.Groups["code"].Value, System.Globalization.CultureInfo.InvariantCulture);
        var message = match.Groups["text"].Value.Trim();
        return new ClickHouseException($"ClickHouse error {code}: {message}", code, status);
    }

    [GeneratedRegex(@"Code: (?<code>\d+)[,.] (?:e\.displayText\(\) = )?(?:DB::Exception: )?(?<text>.*?)(?:, e\.what\(\) = .*)?\s*$",
        RegexOptions.Singleline)]
    private static partial Regex ErrorPattern();
}
