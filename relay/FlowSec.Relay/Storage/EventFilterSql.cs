using System.Net;
using FlowSec.Api.Filters;
using FlowSec.Api.V1;

namespace FlowSec.Relay.Storage;

/// <summary>
/// Turns compiled allow/deny filters into a WHERE condition for one event table, so history is
/// filtered by ClickHouse instead of being read and dropped in C#. Each filter is an AND of typed
/// predicates, the allow list an OR, the deny list NOT(OR). The meaning is
/// <see cref="CompiledEventFilter.Matches"/>'s, predicate by predicate, against the columns the
/// table stores; a field the table has no column for (e.g. a destination on process events) is
/// false, as it is for the C# matcher, whose events of that type have no such part. Every value
/// goes through <see cref="SqlLiteral"/>. Constant parts fold, so a filter that can never match a
/// table (e.g. <c>--type dns</c> on flows) yields <see cref="False"/> and the table is not queried.
/// </summary>
internal static class EventFilterSql
{
    /// <summary>The condition that always holds.</summary>
    public const string True = "1";

    /// <summary>The condition that never holds.</summary>
    public const string False = "0";

    // ::ffff:0.0.0.0 .. ::ffff:255.255.255.255: where stored IPv4 addresses live.
    private static readonly byte[] MappedLow = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
    private static readonly byte[] MappedHigh = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

    /// <summary>The condition selecting the rows of <paramref name="table"/> that <paramref name="filter"/> passes.</summary>
    public static string Where(EventTable table, EventFilterMatcher filter)
    {
        var allow = filter.Allow.Count == 0 ? True : Or(filter.Allow.Select(f => Condition(table, f)));
        var deny = Or(filter.Deny.Select(f => Condition(table, f)));
        return And([allow, Not(deny)]);
    }

    private static string Condition(EventTable t, CompiledEventFilter f) => And(
    [
        Field(f.Node, values => In(t, "node", values)),
        Field(f.Namespace, values => Either(side => In(t, side + "_namespace", values))),
        Field(f.Pod, pods => Either(side => Or(pods.Select(p => Pod(t, side, p))))),
        Field(f.SourcePod, pods => Or(pods.Select(p => Pod(t, "src", p)))),
        Field(f.DestinationPod, pods => Or(pods.Select(p => Pod(t, "dst", p)))),
        Field(f.Workload, values => Either(side => In(t, side + "_workload", values))),
        Field(f.Label, labels => Either(side => Or(labels.Select(l => Label(t, side, l))))),
        Field(f.Ip, ranges => Either(side => Or(ranges.Select(c => Range(t, side + "_ip", c))))),
        Field(f.SourceIp, ranges => Or(ranges.Select(c => Range(t, "src_ip", c)))),
        Field(f.DestinationIp, ranges => Or(ranges.Select(c => Range(t, "dst_ip", c)))),
        Field(f.Port, ports => Either(side => InLiterals(t, side + "_port", ports.Select(p => SqlLiteral.Integer((long)p))))),
        Field(f.DestinationPort, ports => InLiterals(t, "dst_port", ports.Select(p => SqlLiteral.Integer((long)p)))),
        Field(f.Protocol, values => InLiterals(t, "protocol", values.Select(p => SqlLiteral.String(FlowTable.ProtocolName(p))))),
        Field(f.EventType, types => EventTypes(t, types)),
        Field(f.Verdict, values => InLiterals(t, "verdict", values.Select(v => SqlLiteral.String(FlowTable.VerdictName(v))))),
        Field(f.DnsName, patterns => Or(
        [
            Has(t, "query") ? Or(patterns.Select(p => DnsName("query", p))) : False,
            Either(side => Has(t, Names(side)) ? Or(patterns.Select(p => PackedName(Names(side), p))) : False),
        ])),
        Field(f.Process, values => Either(side => In(t, side + "_process", values))),
    ]);

    // An unset field (no values) does not restrict.
    private static string Field<T>(IReadOnlyList<T> values, Func<IReadOnlyList<T>, string> condition) =>
        values.Count == 0 ? True : condition(values);

    private static string Either(Func<string, string> side) => Or([side("src"), side("dst")]);

    private static bool Has(EventTable t, string column) => t.ColumnNames.Contains(column);

    private static string In(EventTable t, string column, IEnumerable<string> values) => InLiterals(t, column, values.Select(SqlLiteral.String));

    private static string InLiterals(EventTable t, string column, IEnumerable<string> literals)
    {
        if (!Has(t, column))
        {
            return False;
        }
        var list = literals.Distinct().ToArray();
        return list.Length == 1 ? $"`{column}` = {list[0]}" : $"`{column}` IN ({string.Join(", ", list)})";
    }

    private static string Pod(EventTable t, string side, PodRef pod) =>
        !Has(t, side + "_pod") ? False
        : pod.Namespace is null ? $"`{side}_pod` = {SqlLiteral.String(pod.Pod)}"
        : $"(`{side}_namespace` = {SqlLiteral.String(pod.Namespace)} AND `{side}_pod` = {SqlLiteral.String(pod.Pod)})";

    // A substring search in the packed labels (PackedStrings): the needle starts and ends at separators,
    // which never occur inside keys and values, so it cannot match across or inside items.
    private static string Label(EventTable t, string side, LabelSelector label) =>
        !Has(t, Labels(side)) ? False
        : $"position(`{Labels(side)}`, {SqlLiteral.String(label.Value is null ? PackedStrings.LabelKeyNeedle(label.Key) : PackedStrings.LabelNeedle(label.Key, label.Value))}) > 0";

    private static string Labels(string side) => side + "_" + EndpointColumns.LabelsColumn;

    private static string Names(string side) => side + "_" + EndpointColumns.NamesColumn;

    // Stored addresses are FixedString(16): IPv6 as is, IPv4 as ::ffff:a.b.c.d, no address as ::.
    // A CIDR is a byte range of that form. An IPv6 range never holds IPv4 addresses or :: (the
    // matcher compares families, and :: is no address), so those are cut out when it spans them.
    private static string Range(EventTable t, string column, EventFilterMatcher.Cidr cidr)
    {
        if (!Has(t, column))
        {
            return False;
        }
        var v4 = cidr.Network.Length == 4;
        var low = new byte[16];
        if (v4)
        {
            MappedLow.CopyTo(low, 0);
        }
        cidr.Network.CopyTo(low, v4 ? 12 : 0);
        var high = (byte[])low.Clone();
        var prefix = (v4 ? 96 : 0) + cidr.PrefixLength;
        for (var bit = prefix; bit < 128; bit++)
        {
            low[bit / 8] &= (byte)~(0x80 >> (bit % 8));
            high[bit / 8] |= (byte)(0x80 >> (bit % 8));
        }
        var parts = new List<string>
        {
            $"`{column}` >= {SqlLiteral.Ip(new IPAddress(low))}",
            $"`{column}` <= {SqlLiteral.Ip(new IPAddress(high))}",
        };
        if (!v4)
        {
            if (low.AsSpan().IndexOfAnyExcept((byte)0) < 0)
            {
                parts.Add($"`{column}` != {SqlLiteral.Ip(IPAddress.IPv6None)}");
            }
            if (low.AsSpan().SequenceCompareTo(MappedHigh) <= 0 && high.AsSpan().SequenceCompareTo(MappedLow) >= 0)
            {
                parts.Add($"NOT (`{column}` >= {SqlLiteral.Ip(new IPAddress(MappedLow))} AND `{column}` <= {SqlLiteral.Ip(new IPAddress(MappedHigh))})");
            }
        }
        return "(" + string.Join(" AND ", parts) + ")";
    }

    private static string EventTypes(EventTable t, IReadOnlyList<EventType> types)
    {
        var wanted = t.Types.Where(types.Contains).ToArray();
        return wanted.Length == 0 ? False : t.TypeFilter(wanted) ?? True;
    }

    // DnsNamePattern.Canonical in SQL: trailing dots removed, then ASCII lower case (lower() is ASCII-only).
    private static string DnsName(string expression, DnsNamePattern pattern)
    {
        var canonical = $"lower(replaceRegexpOne({expression}, '\\\\.+$', ''))";
        return pattern.IsSuffix
            ? $"endsWith({canonical}, {SqlLiteral.String(pattern.Name)})"
            : $"{canonical} = {SqlLiteral.String(pattern.Name)}";
    }

    // The same on packed names: some item, in ASCII lower case (escapes are not letters, so lower()
    // leaves them be), is the name, or ends with the suffix, followed by any trailing dots and the
    // item's end. An exact name starts right after a separator; a suffix starts with '.', which is
    // never the second byte of an escape, so it cannot match half an escaped character.
    private static string PackedName(string column, DnsNamePattern pattern) =>
        $"match(lower(`{column}`), {SqlLiteral.String((pattern.IsSuffix ? "" : PackedStrings.Separator.ToString()) + RegexLiteral(PackedStrings.Escaped(pattern.Name)) + "\\.*" + PackedStrings.Separator)})";

    // Text that an RE2 pattern matches literally: its metacharacters behind a backslash, everything else
    // (the separators included) as it is; ClickHouse's pattern analysis misreads "\xHH" escapes.
    private static string RegexLiteral(string text)
    {
        var sb = new System.Text.StringBuilder(text.Length + 8);
        foreach (var c in text)
        {
            if ("\\.+*?()|[]{}^$".Contains(c, StringComparison.Ordinal))
            {
                sb.Append('\\');
            }
            sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary>AND of conditions, folding constants; no conditions is true.</summary>
    public static string And(IEnumerable<string> conditions) => Fold(conditions, "AND", identity: True, absorbing: False);

    /// <summary>OR of conditions, folding constants; no conditions is false.</summary>
    public static string Or(IEnumerable<string> conditions) => Fold(conditions, "OR", identity: False, absorbing: True);

    private static string Fold(IEnumerable<string> conditions, string op, string identity, string absorbing)
    {
        var parts = new List<string>();
        foreach (var c in conditions)
        {
            if (c == absorbing)
            {
                return absorbing;
            }
            if (c != identity)
            {
                parts.Add(c);
            }
        }
        return parts.Count switch { 0 => identity, 1 => parts[0], _ => "(" + string.Join($" {op} ", parts) + ")" };
    }

    private static string Not(string condition) => condition switch { True => False, False => True, _ => "NOT (" + condition + ")" };
}
