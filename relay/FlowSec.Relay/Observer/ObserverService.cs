using FlowSec.Api.Filters;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Relay.Ingest;
using FlowSec.Relay.Pipeline;
using FlowSec.Relay.Storage;
using Microsoft.Extensions.Options;

namespace FlowSec.Relay.Observer;

/// <summary>
/// <c>flowsec.v1.Observer</c>: events out of the relay for the CLI and other tools. History comes
/// from ClickHouse; <c>follow</c> continues with live events, subscribed before the history query
/// so nothing falls between the two.
/// </summary>
public sealed class ObserverService(
    ClickHouseEventStore store,
    ClickHouseHttpClient clickHouse,
    ClickHouseFlowWriter writer,
    ObserverFeed feed,
    EventPipeline pipeline,
    NodeRegistry nodes,
    RecentBatches recent,
    IOptions<RelayOptions> options)
{
    /// <summary>Most stored events one request may ask for with <c>last</c>: the relay holds that many in memory while it merges tables.</summary>
    public const uint MaxLast = 100_000;

    /// <summary>Streams stored events matching the request (every requested type, merged in time order), then live ones when following.</summary>
    public async Task GetEventsAsync(GetEventsRequest request, GrpcResponseStream<Event> responses, GrpcCallContext call)
    {
        if (request.UntilUnixNano != 0 && request.UntilUnixNano < request.SinceUnixNano)
        {
            throw new GrpcException(GrpcStatusCode.InvalidArgument, "until is before since");
        }
        // uint on the wire, int in the query: refuse rather than wrap to a negative limit or clamp silently.
        if (request.Last > MaxLast)
        {
            throw new GrpcException(GrpcStatusCode.InvalidArgument, $"last is {request.Last}; at most {MaxLast} events can be asked for");
        }
        foreach (var type in request.EventTypes)
        {
            if (!ClickHouseEventStore.StoredTypes.Contains(type))
            {
                throw new GrpcException(GrpcStatusCode.InvalidArgument, $"unknown event type {type}");
            }
        }
        EventFilterMatcher filter;
        try
        {
            filter = new EventFilterMatcher(request.Allow, request.Deny);
        }
        catch (ArgumentException ex)
        {
            throw new GrpcException(GrpcStatusCode.InvalidArgument, ex.Message);
        }
        using var live = request.Follow ? feed.Subscribe() : null;
        ulong newestSent = 0;
        var wantsHistory = request.SinceUnixNano != 0 || request.Last != 0 || !request.Follow;
        if (wantsHistory)
        {
            // Filters run in ClickHouse (EventFilterSql), so `last` is the newest N matches.
            var query = new EventQuery(
                request.SinceUnixNano == 0 ? null : FromUnixNano(request.SinceUnixNano),
                request.UntilUnixNano == 0 ? null : FromUnixNano(request.UntilUnixNano),
                request.Last == 0 ? null : (int)request.Last,
                filter.IsEmpty ? null : filter);
            IAsyncEnumerable<Event> history;
            try
            {
                // Streamed: without `last` the window may hold millions of events.
                history = store.StreamAsync(query, request.EventTypes, call.CancellationToken);
            }
            catch (ArgumentException ex)
            {
                // e.g. a window beyond what a ClickHouse DateTime holds (2105): the caller's mistake, said plainly.
                throw new GrpcException(GrpcStatusCode.InvalidArgument, ex.Message);
            }
            await foreach (var e in history)
            {
                newestSent = Math.Max(newestSent, e.TimeUnixNano);
                await responses.WriteAsync(e);
            }
        }
        if (live is null)
        {
            return;
        }
        await foreach (var e in live.Channel.Reader.ReadAllAsync(call.CancellationToken))
        {
            if (e.TimeUnixNano <= newestSent || !Wants(request, e.Type) || !filter.Matches(e) ||
                (request.UntilUnixNano != 0 && e.TimeUnixNano > request.UntilUnixNano))
            {
                continue;
            }
            await responses.WriteAsync(e);
        }
    }

    /// <summary>Counts and bytes per group of stored events (<c>flowsec query --group-by</c>), filtered like <see cref="GetEventsAsync"/>.</summary>
    public async Task<AggregateResponse> AggregateAsync(AggregateRequest request, GrpcCallContext call)
    {
        if (request.UntilUnixNano != 0 && request.UntilUnixNano < request.SinceUnixNano)
        {
            throw new GrpcException(GrpcStatusCode.InvalidArgument, "until is before since");
        }
        if (request.Top > AggregateQuery.MaxTop)
        {
            throw new GrpcException(GrpcStatusCode.InvalidArgument, $"top is {request.Top}; at most {AggregateQuery.MaxTop} groups can be asked for");
        }
        if (!Enum.IsDefined(request.Sort))
        {
            throw new GrpcException(GrpcStatusCode.InvalidArgument, $"unknown sort {(int)request.Sort}");
        }
        if (request.GroupBy.Count == 0)
        {
            throw new GrpcException(GrpcStatusCode.InvalidArgument,
                "group_by needs at least one field; valid fields: " + string.Join(", ", GroupByField.All.Select(f => f.Name)));
        }
        IReadOnlyList<AggregateGroupRow> rows;
        try
        {
            var filter = new EventFilterMatcher(request.Allow, request.Deny);
            var window = new EventQuery(
                request.SinceUnixNano == 0 ? null : FromUnixNano(request.SinceUnixNano),
                request.UntilUnixNano == 0 ? null : FromUnixNano(request.UntilUnixNano),
                Filter: filter.IsEmpty ? null : filter);
            var query = new AggregateQuery(window, request.GroupBy.Select(GroupByField.Parse).ToArray(),
                request.Top == 0 ? AggregateQuery.MaxTop : (int)request.Top, request.Sort == AggregateSort.Bytes);
            rows = await store.AggregateAsync(query, request.EventTypes, call.CancellationToken);
        }
        catch (ArgumentException ex)
        {
            throw new GrpcException(GrpcStatusCode.InvalidArgument, ex.Message);
        }
        var response = new AggregateResponse { GroupBy = { request.GroupBy } };
        response.Groups.AddRange(rows.Select(r => new AggregateGroup
        {
            Keys = { r.Keys },
            Count = r.Count,
            BytesSent = r.BytesSent,
            BytesReceived = r.BytesReceived,
        }));
        return response;
    }

    /// <summary>Reports storage, ingest and node state.</summary>
    public async Task<StatusResponse> GetStatusAsync(StatusRequest request, GrpcCallContext call)
    {
        var response = new StatusResponse
        {
            Version = typeof(ObserverService).Assembly.GetName().Version?.ToString() ?? "",
            EventsReceived = (ulong)pipeline.EventsReceived,
            EventsStored = (ulong)writer.EventsStored,
            UiUrl = options.Value.UiUrl,
            DuplicateEventsSkipped = (ulong)recent.DuplicateEvents,
            DuplicateBatchesSkipped = (ulong)recent.Duplicates,
            BatchesWithdrawn = (ulong)pipeline.BatchesWithdrawn,
            EventsWithdrawn = (ulong)pipeline.EventsWithdrawn,
            BatchesAbandoned = (ulong)writer.BatchesAbandoned,
            EventsAbandoned = (ulong)writer.EventsAbandoned,
        };
        try
        {
            response.StorageOk = await clickHouse.PingAsync(call.CancellationToken);
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or InvalidOperationException)
        {
            response.StorageError = ex.Message;
        }
        if (response.StorageOk && writer.LastError is { } lastError)
        {
            response.StorageError = lastError;
        }
        response.Nodes.AddRange(nodes.Snapshot());
        return response;
    }

    private static bool Wants(GetEventsRequest request, EventType type) =>
        request.EventTypes.Count == 0 || request.EventTypes.Contains(type);

    private static DateTimeOffset FromUnixNano(ulong ns) =>
        DateTimeOffset.FromUnixTimeMilliseconds((long)(ns / 1_000_000)).AddTicks((long)(ns % 1_000_000) / 100);
}
