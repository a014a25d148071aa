using System.CommandLine;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Cli.Query;

namespace FlowSec.Cli.Observe;

/// <summary>
/// <c>flowsec observe</c>: events as they happen (<c>--follow</c>) and recent history, with
/// Hubble's filter flags, through the relay's observer API.
/// </summary>
public static class ObserveCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create(RelayConnection relay)
    {
        var filters = new FilterOptions();
        var since = new Option<string?>("--since") { Description = "Start: an age (10m, 2h, 1d) or a timestamp" };
        var until = new Option<string?>("--until") { Description = "End: an age or a timestamp" };
        var last = new Option<uint>("--last") { Description = "The newest N events (default 20 without --follow or --since)" };
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep streaming new events" };
        var output = new Option<string>("--output", "-o") { Description = "compact, table or json", DefaultValueFactory = _ => "compact" };
        output.AcceptOnlyFromAmong("compact", "table", "json");
        var command = new Command("observe", "Observe events live and recent, with filters") { since, until, last, follow, output };
        filters.AddTo(command);
        relay.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var request = new GetEventsRequest { Follow = parse.GetValue(follow), Last = parse.GetValue(last) };
            try
            {
                var now = DateTimeOffset.UtcNow;
                if (parse.GetValue(since) is { } s)
                {
                    request.SinceUnixNano = TimeSpec.ToUnixNano(TimeSpec.Parse(s, now));
                }
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
                Console.Error.WriteLine("flowsec observe: " + ex.Message);
                return 2;
            }
            if (!request.Follow && request.SinceUnixNano == 0 && request.Last == 0)
            {
                request.Last = 20;
            }
            var printer = new EventPrinter(Console.Out, parse.GetValue(output)!);
            using var client = relay.Connect(parse);
            try
            {
                await foreach (var e in client.ServerStreamingAsync(RelayMethods.GetEvents, request, Event.Parser, ct))
                {
                    printer.Write(e);
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // Ctrl-C ends a follow.
            }
            return 0;
        });
        return command;
    }
}
