using FlowSec.Api.Filters;

namespace FlowSec.Relay.Storage;

/// <summary>A stored-event query: a time window (since inclusive, until exclusive), filters, and the newest <paramref name="Limit"/> events of it.</summary>
/// <param name="Since">Earliest event time (inclusive); null = no lower bound.</param>
/// <param name="Until">Latest event time (exclusive); null = no upper bound.</param>
/// <param name="Limit">How many of the newest matching events to return, all types together; null = all.</param>
/// <param name="Filter">Allow/deny filters, applied by ClickHouse (see <see cref="EventFilterSql"/>); null = none.</param>
public sealed record EventQuery(DateTimeOffset? Since = null, DateTimeOffset? Until = null, int? Limit = null, EventFilterMatcher? Filter = null);
