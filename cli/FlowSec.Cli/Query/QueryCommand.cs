using System.CommandLine;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;

namespace FlowSec.Cli.Query;

/// <summary>
/// <c>flowsec query &lt;flows|dns|process|file|alerts&gt;</c>: stored events for incident review,
/// or with <c>--group-by</c> counts and bytes per group (the <c>--top</c> N, by <c>--sort</c>).
/// </summary>
public static class QueryCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create(RelayConnection relay)
    {
        var kind = new Argument<string>("kind") { Description = "What to query: flows, dns, process, file or alerts" };
        kind.AcceptOnlyFromAmong("flows", "dns", "process", "file", "alerts");
        var since = new Option<string>("--since") { Description = "Start: an age (10m, 2h, 1d) or a timestamp", DefaultValueFactory = _ => "1h" };
        var until = new Option<string?>("--until") { Description = "End: an age or a timestamp (default: now)" };
        var last = new Option<uint>("--last") { Description = "Only the newest N events" };
        var output = new Option<string>("--output", "-o") { Description = "json (one object per line), table or compact", DefaultValueFactory = _ => "table" };
        output.AcceptOnlyFromAmong("json", "table", "compact");
        var groupBy = new Option<string[]>("--group-by")
        {
            Description = "Count events per group of these fields (comma list), e.g. source.pod,destination.port",
            AllowMultipleArgumentsPerToken = true,
        };
        var top = new Option<uint>("--top") { Description = "With --group-by: only the N largest groups" };
        var sort = new Option<string>("--sort") { Description = "With --group-by: count (default) or bytes", DefaultValueFactory = _ => "count" };
        sort.AcceptOnlyFromAmong("count", "bytes");
        var filters = new Observe.FilterOptions();

        var command = new Command("query", "Query stored events") { kind, since, until, last, output, groupBy, top, sort };
        filters.AddTo(command);
        relay.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var now = DateTimeOffset.UtcNow;
            ulong sinceNs, untilNs = 0;
            EventFilter? filter;
            var fields = (parse.GetValue(groupBy) ?? []).SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
            try
            {
                sinceNs = TimeSpec.ToUnixNano(TimeSpec.Parse(parse.GetValue(since)!, now));
                if (parse.GetValue(until) is { } u)
                {
                    untilNs = TimeSpec.ToUnixNano(TimeSpec.Parse(u, now));
                }
                filter = filters.Build(parse);
                if (fields.Length == 0 && (parse.GetResult(top) is { Implicit: false } || parse.GetResult(sort) is { Implicit: false }))
                {
                    throw new FormatException("--top and --sort need --group-by");
                }
                if (fields.Length > 0 && parse.GetResult(last) is { Implicit: false })
                {
                    throw new FormatException("--last lists events; with --group-by use --top");
                }
            }
            catch (FormatException ex)
            {
                Console.Error.WriteLine("flowsec query: " + ex.Message);
                return 2;
            }
            EventType[] types = parse.GetValue(kind) switch
            {
                "flows" => [EventType.Flow],
                "dns" => [EventType.Dns],
                "process" => [EventType.Exec, EventType.Exit],
                "alerts" => [EventType.Alert],
                _ => [EventType.File],
            };
            using var client = relay.Connect(parse);
            if (fields.Length > 0)
            {
                var aggregate = new AggregateRequest
                {
                    SinceUnixNano = sinceNs,
                    UntilUnixNano = untilNs,
                    EventTypes = { types },
                    GroupBy = { fields },
                    Top = parse.GetValue(top),
                    Sort = parse.GetValue(sort) == "bytes" ? AggregateSort.Bytes : AggregateSort.Count,
                };
                if (filter is not null)
                {
                    aggregate.Allow.Add(filter);
                }
                AggregateResponse response;
                try
                {
                    response = await client.UnaryAsync(RelayMethods.Aggregate, aggregate, AggregateResponse.Parser, ct);
                }
                catch (GrpcException ex) when (ex.Status == GrpcStatusCode.InvalidArgument)
                {
                    // e.g. an unknown group-by field: the relay's message lists the valid ones.
                    Console.Error.WriteLine("flowsec query: " + ex.Detail);
                    return 2;
                }
                AggregatePrinter.Write(Console.Out, response, parse.GetValue(output)!);
                return 0;
            }

            var request = new GetEventsRequest { Last = parse.GetValue(last), SinceUnixNano = sinceNs, UntilUnixNano = untilNs, EventTypes = { types } };
            if (filter is not null)
            {
                request.Allow.Add(filter);
            }
            var printer = new EventPrinter(Console.Out, parse.GetValue(output)!);
            try
            {
                await foreach (var e in client.ServerStreamingAsync(RelayMethods.GetEvents, request, Event.Parser, ct))
                {
                    printer.Write(e);
                }
            }
            catch (GrpcException ex) when (ex.Status == GrpcStatusCode.InvalidArgument)
            {
                Console.Error.WriteLine("flowsec query: " + ex.Detail);
                return 2;
            }
            return 0;
        });
        return command;
    }
}
