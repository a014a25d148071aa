using System.CommandLine;
using System.Globalization;
using FlowSec.Api.Grpc;
using FlowSec.Api.Json;
using FlowSec.Api.Status;
using FlowSec.Api.V1;

namespace FlowSec.Cli.Status;

/// <summary>
/// <c>flowsec status</c>: relay, storage, nodes, capture paths and loss counters. Exit code 0 only
/// when ClickHouse, the relay and at least one sensor are all up, so scripts can wait on it.
/// </summary>
public static class StatusCommand
{
    /// <summary>A node counts as up when its last batch (or heartbeat) is this recent.</summary>
    public static readonly TimeSpan NodeFreshness = TimeSpan.FromSeconds(10);

    /// <summary>Builds the command.</summary>
    public static Command Create(RelayConnection relay)
    {
        var command = new Command("status", "Show what is running, which BPF programs are attached, events received");
        relay.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            StatusResponse status;
            try
            {
                using var client = relay.Connect(parse);
                status = await client.UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser, ct,
                    TimeSpan.FromSeconds(5));
            }
            catch (GrpcException ex)
            {
                Console.WriteLine($"relay       down   {ex.Detail}");
                return 1;
            }
            Print(Console.Out, status, parse.GetValue(relay.Relay)!);
            return IsHealthy(status, DateTimeOffset.UtcNow) ? 0 : 1;
        });
        return command;
    }

    /// <summary>True when storage is up and at least one sensor reported recently.</summary>
    public static bool IsHealthy(StatusResponse status, DateTimeOffset now) =>
        status.StorageOk && status.Nodes.Any(n => IsFresh(n, now));

    private static bool IsFresh(NodeStatus node, DateTimeOffset now) =>
        node.Connected && now.ToUnixTimeMilliseconds() * 1_000_000 - (long)node.LastSeenUnixNano < NodeFreshness.Ticks * 100;

    /// <summary>Writes the human-readable status report.</summary>
    public static void Print(TextWriter o, StatusResponse s, string relayAddress)
    {
        var now = DateTimeOffset.UtcNow;
        o.WriteLine($"relay       up     {relayAddress}  events received {s.EventsReceived}");
        o.WriteLine(s.StorageOk
            ? $"clickhouse  up     events stored {s.EventsStored}{(s.StorageError.Length > 0 ? "  last error: " + s.StorageError : "")}"
            : $"clickhouse  down   {s.StorageError}");
        o.WriteLine($"dedup       duplicates skipped {s.DuplicateEventsSkipped} events ({s.DuplicateBatchesSkipped} re-sent batches), withdrawn unacked {s.EventsWithdrawn} events ({s.BatchesWithdrawn} batches)");
        // Not a loss: another relay claimed a re-sent copy of these batches and stores them there.
        o.WriteLine($"            abandoned to another relay's claim {s.EventsAbandoned} events ({s.BatchesAbandoned} batches)");
        o.WriteLine($"ui          {s.UiUrl}");
        o.WriteLine();
        if (s.Nodes.Count == 0)
        {
            o.WriteLine("sensors     none connected");
            return;
        }
        // LAG: capture → relay delay of the oldest event in the node's last batch; LOST: the sum of
        // its loss counters (listed one by one below), so a node that loses events stands out here.
        o.WriteLine($"{"NODE",-20} {"STATE",-6} {"LAST SEEN",-25} {"EVENTS",10} {"EVENTS/S",9} {"LAG",8} {"LOST",8}");
        foreach (var n in s.Nodes)
        {
            var state = IsFresh(n, now) ? "up" : "down";
            var lost = n.Sensor is null ? "-" : SensorLossCounters.Total(n.Sensor.Counters).ToString(CultureInfo.InvariantCulture);
            var rate = n.EventsPerSecond.ToString(n.EventsPerSecond < 10 ? "0.0" : "0", CultureInfo.InvariantCulture);
            o.WriteLine($"{n.Node,-20} {state,-6} {EventJson.FormatTime(n.LastSeenUnixNano)[..23],-25} {n.EventsReceived,10} {rate,9} {FormatLag(n.LagMs),8} {lost,8}");
        }
        foreach (var n in s.Nodes.Where(n => n.Sensor is not null))
        {
            o.WriteLine();
            o.WriteLine($"capture on {n.Node}:");
            o.WriteLine($"  {"SIGNAL",-8} {"STATE",-12} {"PROGRAM",-28} {"PATH",-36} REASON");
            foreach (var c in n.Sensor.Capture)
            {
                o.WriteLine($"  {c.Signal,-8} {c.State,-12} {c.Program,-28} {c.Path,-36} {c.Reason}");
            }
            o.WriteLine($"counters on {n.Node}:");
            foreach (var (name, value) in n.Sensor.Counters.OrderBy(c => c.Key, StringComparer.Ordinal))
            {
                o.WriteLine($"  {name,-32} {value}{(SensorLossCounters.IsLoss(name) && value > 0 ? "  (lost)" : "")}");
            }
        }
    }

    private static string FormatLag(ulong ms) => ms switch
    {
        0 => "-",
        < 10_000 => $"{ms} ms",
        _ => $"{ms / 1000} s",
    };
}
