using System.Buffers;
using System.Text;
using Google.Protobuf.Collections;

namespace FlowSec.Relay.Storage;

/// <summary>
/// An endpoint's labels, or its DNS names, packed into one String value (the
/// <c>{side}_labels_text</c> and <c>{side}_names_text</c> columns). Arrays cost the server their
/// offsets on every row (about 8 bytes per array per row, uncompressed, through LZ4 and every merge),
/// one String only its length byte when empty. The form is canonical and unambiguous, and a label or
/// name is found with a plain substring search:
/// <list type="bullet">
/// <item>no item: the empty string;</item>
/// <item>otherwise <see cref="Separator"/> before every item and after the last one;</item>
/// <item>a label item is the key, <see cref="KeyValue"/>, the value;</item>
/// <item>inside keys, values and names, <see cref="Escape"/>, <see cref="Separator"/> and
/// <see cref="KeyValue"/> are written as <see cref="Escape"/> then '0', '1' or '2' (escape first),
/// so the two separators never occur inside content.</item>
/// </list>
/// These are single UTF-8 bytes that never occur inside a multi-byte sequence, so the bytes and the
/// UTF-16 form escape alike. <c>app=web, tier=db</c> is <c>␞app␟web␞tier␟db␞</c>; names
/// <c>a.com, b.com</c> are <c>␞a.com␞b.com␞</c>; one empty name is <c>␞␞</c>.
/// The C# writers here, the Native writer of the ingest decoder (<c>FlowRows</c>) and <see cref="LabelsSql"/>/<see cref="NamesSql"/>
/// (the migration from the array columns) produce the same bytes.
/// </summary>
internal static class PackedStrings
{
    /// <summary>Before every item and after the last one (ASCII record separator).</summary>
    public const char Separator = '\x1e';

    /// <summary>Between a label's key and value (ASCII unit separator).</summary>
    public const char KeyValue = '\x1f';

    /// <summary>Starts an escape (ASCII group separator): followed by '0' for itself, '1' for <see cref="Separator"/>, '2' for <see cref="KeyValue"/>.</summary>
    public const char Escape = '\x1d';

    private static readonly SearchValues<char> Special = SearchValues.Create([Escape, Separator, KeyValue]);
    private static readonly SearchValues<byte> SpecialBytes = SearchValues.Create([(byte)Escape, (byte)Separator, (byte)KeyValue]);

    /// <summary>Labels in the map's order.</summary>
    public static string Labels(IEnumerable<KeyValuePair<string, string>> labels)
    {
        var sb = new StringBuilder();
        foreach (var (key, value) in labels)
        {
            AppendEscaped(sb.Append(Separator), key);
            AppendEscaped(sb.Append(KeyValue), value);
        }

        return sb.Length == 0 ? string.Empty : sb.Append(Separator).ToString();
    }

    /// <summary>Names in order.</summary>
    public static string Names(IEnumerable<string> names)
    {
        var sb = new StringBuilder();
        foreach (var name in names)
        {
            AppendEscaped(sb.Append(Separator), name);
        }

        return sb.Length == 0 ? string.Empty : sb.Append(Separator).ToString();
    }

    /// <summary>A key or value or name escaped as it appears inside a packed value.</summary>
    public static string Escaped(string content) =>
        content.AsSpan().ContainsAny(Special) ? AppendEscaped(new StringBuilder(content.Length + 4), content).ToString() : content;

    /// <summary>The substring a packed labels value holds exactly when it has the label <paramref name="key"/>=<paramref name="value"/>.</summary>
    public static string LabelNeedle(string key, string value) => Separator + Escaped(key) + KeyValue + Escaped(value) + Separator;

    /// <summary>The substring a packed labels value holds exactly when it has a label <paramref name="key"/>.</summary>
    public static string LabelKeyNeedle(string key) => Separator + Escaped(key) + KeyValue;

    /// <summary>Writes labels as a String column value, without building the string (one length byte when there are none).</summary>
    public static void WriteLabels(RowBinaryWriter w, MapField<string, string> labels)
    {
        if (labels.Count == 0)
        {
            w.WriteVarUInt(0);
            return;
        }

        var length = 1;
        foreach (var pair in labels)
        {
            length += EscapedByteCount(pair.Key) + EscapedByteCount(pair.Value) + 2;
        }

        w.WriteVarUInt((ulong)length);
        var span = w.Reserve(length);
        var at = 0;
        foreach (var pair in labels)
        {
            span[at++] = (byte)Separator;
            at += WriteEscaped(pair.Key, span[at..]);
            span[at++] = (byte)KeyValue;
            at += WriteEscaped(pair.Value, span[at..]);
        }

        span[at] = (byte)Separator;
    }

    /// <summary>Writes names as a String column value (one length byte when there are none).</summary>
    public static void WriteNames(RowBinaryWriter w, RepeatedField<string> names)
    {
        if (names.Count == 0)
        {
            w.WriteVarUInt(0);
            return;
        }

        var length = 1;
        for (var i = 0; i < names.Count; i++)
        {
            length += EscapedByteCount(names[i]) + 1;
        }

        w.WriteVarUInt((ulong)length);
        var span = w.Reserve(length);
        var at = 0;
        for (var i = 0; i < names.Count; i++)
        {
            span[at++] = (byte)Separator;
            at += WriteEscaped(names[i], span[at..]);
        }

        span[at] = (byte)Separator;
    }

    /// <summary>The length of UTF-8 <paramref name="content"/> once escaped.</summary>
    public static int EscapedLength(ReadOnlySpan<byte> content)
    {
        var length = content.Length;
        var rest = content;
        int i;
        while ((i = rest.IndexOfAny(SpecialBytes)) >= 0)
        {
            length++;
            rest = rest[(i + 1)..];
        }

        return length;
    }

    /// <summary>Copies UTF-8 <paramref name="content"/> escaped into <paramref name="destination"/>; returns the bytes written (<see cref="EscapedLength"/>).</summary>
    public static int CopyEscaped(ReadOnlySpan<byte> content, Span<byte> destination)
    {
        var at = 0;
        int i;
        while ((i = content.IndexOfAny(SpecialBytes)) >= 0)
        {
            content[..i].CopyTo(destination[at..]);
            at += i;
            destination[at++] = (byte)Escape;
            destination[at++] = (byte)('0' + (content[i] - Escape));
            content = content[(i + 1)..];
        }

        content.CopyTo(destination[at..]);
        return at + content.Length;
    }

    /// <summary>Reads packed labels back into <paramref name="labels"/> (a repeated key: the last value wins, as in a map).</summary>
    /// <exception cref="FormatException">The value is not in the packed form.</exception>
    public static void ReadLabels(string packed, MapField<string, string> labels)
    {
        foreach (var item in Items(packed))
        {
            var kv = item.IndexOf(KeyValue, StringComparison.Ordinal);
            if (kv < 0)
            {
                throw new FormatException("A packed label has no key/value separator.");
            }

            labels[Unescaped(item[..kv])] = Unescaped(item[(kv + 1)..]);
        }
    }

    /// <summary>Reads packed names back into <paramref name="names"/>.</summary>
    /// <exception cref="FormatException">The value is not in the packed form.</exception>
    public static void ReadNames(string packed, RepeatedField<string> names)
    {
        foreach (var item in Items(packed))
        {
            names.Add(Unescaped(item));
        }
    }

    private static string[] Items(string packed)
    {
        if (packed.Length == 0)
        {
            return [];
        }

        if (packed.Length < 2 || packed[0] != Separator || packed[^1] != Separator)
        {
            throw new FormatException("A packed value must start and end with the separator.");
        }

        return packed[1..^1].Split(Separator);
    }

    private static string Unescaped(string content)
    {
        var i = content.IndexOf(Escape, StringComparison.Ordinal);
        if (i < 0)
        {
            return content;
        }

        var sb = new StringBuilder(content.Length);
        sb.Append(content, 0, i);
        for (; i < content.Length; i++)
        {
            var c = content[i];
            if (c != Escape)
            {
                sb.Append(c);
                continue;
            }

            if (i + 1 >= content.Length || content[i + 1] is < '0' or > '2')
            {
                throw new FormatException("A packed value holds a bad escape.");
            }

            sb.Append((char)(Escape + (content[++i] - '0')));
        }

        return sb.ToString();
    }

    private static StringBuilder AppendEscaped(StringBuilder sb, string content)
    {
        foreach (var c in content)
        {
            if (c is Escape or Separator or KeyValue)
            {
                sb.Append(Escape).Append((char)('0' + (c - Escape)));
            }
            else
            {
                sb.Append(c);
            }
        }

        return sb;
    }

    private static int EscapedByteCount(string content)
    {
        var length = Encoding.UTF8.GetByteCount(content);
        var rest = content.AsSpan();
        int i;
        while ((i = rest.IndexOfAny(Special)) >= 0)
        {
            length++;
            rest = rest[(i + 1)..];
        }

        return length;
    }

    // UTF-8 first, then escaped in place from the end (escapes only grow it, and the room is reserved).
    private static int WriteEscaped(string content, Span<byte> destination)
    {
        var written = Encoding.UTF8.GetBytes(content, destination);
        var escapes = EscapedLength(destination[..written]) - written;
        if (escapes == 0)
        {
            return written;
        }

        var to = written + escapes;
        for (var from = written - 1; from >= 0; from--)
        {
            var b = destination[from];
            if (b is (byte)Escape or (byte)Separator or (byte)KeyValue)
            {
                destination[--to] = (byte)('0' + (b - Escape));
                destination[--to] = (byte)Escape;
            }
            else
            {
                destination[--to] = b;
            }
        }

        return written + escapes;
    }

    /// <summary>
    /// SQL producing the packed labels from the Nested arrays of schema versions before 11, byte for
    /// byte as <see cref="WriteLabels"/> writes them (functions 18.16 has).
    /// </summary>
    public static string LabelsSql(string keysColumn, string valuesColumn) =>
        $"if(empty(`{keysColumn}`), '', concat({Sql(Separator)}, arrayStringConcat(arrayMap((k, v) -> concat({EscapeSql("k")}, {Sql(KeyValue)}, {EscapeSql("v")}), " +
        $"`{keysColumn}`, `{valuesColumn}`), {Sql(Separator)}), {Sql(Separator)}))";

    /// <summary>SQL producing packed names from an Array(String) column, byte for byte as <see cref="WriteNames"/> writes them.</summary>
    public static string NamesSql(string namesColumn) =>
        $"if(empty(`{namesColumn}`), '', concat({Sql(Separator)}, arrayStringConcat(arrayMap(n -> {EscapeSql("n")}, `{namesColumn}`), {Sql(Separator)}), {Sql(Separator)}))";

    private static string EscapeSql(string expression) =>
        $"replaceAll(replaceAll(replaceAll({expression}, {Sql(Escape)}, {Sql(Escape + "0")}), {Sql(Separator)}, {Sql(Escape + "1")}), {Sql(KeyValue)}, {Sql(Escape + "2")})";

    private static string Sql(char c) => SqlLiteral.String(c.ToString());

    private static string Sql(string s) => SqlLiteral.String(s);
}
