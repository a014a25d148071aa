using System.CommandLine;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;

namespace FlowSec.Cli.Query;

/// <summary><c>flowsec query &lt;flows|dns|process|file&gt;</c>: stored events for incident review.</summary>
public static class QueryCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create(RelayConnection relay)
    {
        var kind = new Argument<string>("kind") { Description = "What to query: flows, dns, process or file" };
        kind.AcceptOnlyFromAmong("flows", "dns", "process", "file");
        var since = new Option<string>("--since") { Description = "Start: an age (10m, 2h, 1d) or a timestamp", DefaultValueFactory = _ => "1h" };
        var until = new Option<string?>("--until") { Description = "End: an age or a timestamp (default: now)" };
        var last = new Option<uint>("--last") { Description = "Only the newest N events" };
        var output = new Option<string>("--output", "-o") { Description = "json (one object per line), table or compact", DefaultValueFactory = _ => "table" };
        output.AcceptOnlyFromAmong("json", "table", "compact");
        var filters = new Observe.FilterOptions();

        var command = new Command("query", "Query stored events") { kind, since, until, last, output };
        filters.AddTo(command);
        relay.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var now = DateTimeOffset.UtcNow;
            var request = new GetEventsRequest { Last = parse.GetValue(last) };
            try
            {
                request.SinceUnixNano = TimeSpec.ToUnixNano(TimeSpec.Parse(parse.GetValue(since)!, now));
                if (parse.GetValue(until) is { } u)
                {
                    request.UntilUnixNano = TimeSpec.ToUnixNano(TimeSpec.Parse(u, now));
                }
                if (filters.Build(parse) is { } filter)
                {
                    request.Allow.Add(filter);
                }
            }
            catch (FormatException ex)
            {
                Console.Error.WriteLine("flowsec query: " + ex.Message);
                return 2;
            }
            request.EventTypes.AddRange(parse.GetValue(kind) switch
            {
                "flows" => [EventType.Flow],
                "dns" => [EventType.Dns],
                "process" => [EventType.Exec, EventType.Exit],
                _ => new[] { EventType.File },
            });
            using var client = relay.Connect(parse);
            var printer = new EventPrinter(Console.Out, parse.GetValue(output)!);
            await foreach (var e in client.ServerStreamingAsync(RelayMethods.GetEvents, request, Event.Parser, ct))
            {
                printer.Write(e);
            }
            return 0;
        });
        return command;
    }
}
