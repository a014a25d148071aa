using FlowSec.Api.Filters;

namespace FlowSec.Relay.Storage;

/// <summary>A group-by query over one event table: window and filters as <see cref="EventQuery"/>, the fields to group by, how many groups.</summary>
/// <param name="Window">Time window and filters (its Limit is not used).</param>
/// <param name="GroupBy">Fields to group by, in output order; at least one.</param>
/// <param name="Top">How many groups, in sort order (1..<see cref="MaxTop"/>).</param>
/// <param name="SortByBytes">Most bytes (sent + received) first instead of most events first.</param>
public sealed record AggregateQuery(EventQuery Window, IReadOnlyList<GroupByField> GroupBy, int Top, bool SortByBytes = false)
{
    /// <summary>Most groups one query returns.</summary>
    public const int MaxTop = 10_000;
}

/// <summary>One group of an aggregate: its key values (one per group-by field), event count and bytes.</summary>
/// <param name="Keys">The group's values, as text, in group-by order.</param>
/// <param name="Count">Events in the group.</param>
/// <param name="BytesSent">Sum of bytes sent (flows; 0 for other tables).</param>
/// <param name="BytesReceived">Sum of bytes received (flows; 0 for other tables).</param>
public sealed record AggregateGroupRow(IReadOnlyList<string> Keys, ulong Count, ulong BytesSent, ulong BytesReceived);
