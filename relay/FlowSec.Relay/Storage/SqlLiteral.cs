using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace FlowSec.Relay.Storage;

/// <summary>
/// The one place where values become SQL text. ClickHouse 18.16 has no query parameters, so every
/// value a query carries (above all, filter values from users) goes through one of these functions,
/// each of which yields a self-contained expression that cannot change the shape of the query.
/// </summary>
public static class SqlLiteral
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Earliest time a DateTime column holds.</summary>
    public static readonly DateTimeOffset MinDateTime = DateTimeOffset.UnixEpoch;

    /// <summary>Latest time a DateTime column holds (UInt32 seconds; 18.16's date tables stop in 2105).</summary>
    public static readonly DateTimeOffset MaxDateTime = new(2105, 12, 31, 23, 59, 59, TimeSpan.Zero);

    /// <summary>
    /// A string literal: <c>'…'</c> with backslash and quote escaped, and control characters (incl.
    /// NUL and DEL) written as <c>\xHH</c> so the text of the query stays printable. Other characters
    /// pass through as UTF-8, which is how the query is sent.
    /// </summary>
    /// <exception cref="ArgumentException">The string holds a lone surrogate, which has no UTF-8 form.</exception>
    public static string String(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        try
        {
            // Validates UTF-16 up front: a lone surrogate would otherwise turn into U+FFFD on the wire.
            _ = StrictUtf8.GetByteCount(value);
        }
        catch (EncoderFallbackException e)
        {
            throw new ArgumentException("The string holds a lone UTF-16 surrogate and cannot be sent to ClickHouse.", nameof(value), e);
        }

        var sb = new StringBuilder(value.Length + 2);
        sb.Append('\'');
        foreach (var c in value)
        {
            switch (c)
            {
                case '\\': sb.Append(@"\\"); break;
                case '\'': sb.Append(@"\'"); break;
                case < ' ' or '\x7f': AppendHexEscape(sb, (byte)c); break;
                default: sb.Append(c); break;
            }
        }

        return sb.Append('\'').ToString();
    }

    /// <summary>A string literal for arbitrary bytes: every byte outside printable ASCII is written as <c>\xHH</c>.</summary>
    public static string String(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length + 2);
        sb.Append('\'');
        foreach (var b in bytes)
        {
            switch (b)
            {
                case (byte)'\\': sb.Append(@"\\"); break;
                case (byte)'\'': sb.Append(@"\'"); break;
                case < 0x20 or >= 0x7f: AppendHexEscape(sb, b); break;
                default: sb.Append((char)b); break;
            }
        }

        return sb.Append('\'').ToString();
    }

    /// <summary>
    /// A signed integer. Negative values are parenthesised: spliced after a minus sign,
    /// <c>1-(-5)</c> stays arithmetic where <c>1--5</c> would start a comment.
    /// </summary>
    public static string Integer(long value) =>
        value < 0 ? "(" + value.ToString(CultureInfo.InvariantCulture) + ")" : value.ToString(CultureInfo.InvariantCulture);

    /// <summary>An unsigned integer.</summary>
    public static string Integer(ulong value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A DateTime, to the second (sub-second parts are truncated), independent of the server's time zone.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside <see cref="MinDateTime"/>..<see cref="MaxDateTime"/>.</exception>
    public static string DateTime(DateTimeOffset value)
    {
        if (value < MinDateTime || value > MaxDateTime)
        {
            throw new ArgumentOutOfRangeException(nameof(value), value, $"ClickHouse DateTime holds {MinDateTime:O} to {MaxDateTime:O}.");
        }

        return "toDateTime(" + Integer(value.ToUnixTimeSeconds()) + ")";
    }

    /// <summary>
    /// An address as FixedString(16), the form the tables store: IPv6 as is, IPv4 as IPv4-mapped IPv6
    /// (<c>::ffff:a.b.c.d</c>). Written as hex so the literal holds only <c>[0-9A-F]</c>.
    /// </summary>
    public static string Ip(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        var v6 = address.AddressFamily == AddressFamily.InterNetwork ? address.MapToIPv6() : address;
        return "toFixedString(unhex('" + Convert.ToHexString(v6.GetAddressBytes()) + "'), 16)";
    }

    /// <summary>An array of strings, e.g. for <c>IN</c> or <c>has()</c>.</summary>
    public static string StringArray(IEnumerable<string> values) => "[" + string.Join(", ", values.Select(String)) + "]";

    /// <summary>
    /// A database, table or column name, checked rather than escaped: letters, digits and underscores,
    /// not starting with a digit, optionally dotted (<c>db.table</c>, <c>labels.key</c>).
    /// </summary>
    /// <exception cref="ArgumentException">The name has any other character.</exception>
    public static string Identifier(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        foreach (var part in name.Split('.'))
        {
            var ok = part.Length > 0 && !char.IsAsciiDigit(part[0]) && part.All(c => char.IsAsciiLetterOrDigit(c) || c == '_');
            if (!ok)
            {
                throw new ArgumentException($"'{name}' is not a valid ClickHouse identifier (letters, digits, '_', dotted parts).", nameof(name));
            }
        }

        return name;
    }

    private static void AppendHexEscape(StringBuilder sb, byte b) => sb.Append(@"\x").Append(b.ToString("X2", CultureInfo.InvariantCulture));
}
