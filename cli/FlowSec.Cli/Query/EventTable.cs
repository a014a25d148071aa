using System.Globalization;
using FlowSec.Api.Json;
using FlowSec.Api.V1;

namespace FlowSec.Cli.Query;

/// <summary>Renders events as an aligned text table for people (JSON is for scripts).</summary>
public static class EventTable
{
    private static readonly string[] Headers = ["TIME", "NODE", "TYPE", "SOURCE", "DESTINATION", "SUMMARY"];

    /// <summary>Writes a header and one row per event.</summary>
    public static void Write(TextWriter output, IReadOnlyList<Event> events)
    {
        var rows = events.Select(Row).ToList();
        var widths = Headers.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        output.WriteLine(Format(Headers, widths));
        foreach (var row in rows)
        {
            output.WriteLine(Format(row, widths));
        }
    }

    private static string Format(string[] cells, int[] widths) =>
        string.Join("  ", cells.Select((c, i) => i == cells.Length - 1 ? c : c.PadRight(widths[i]))).TrimEnd();

    private static string[] Row(Event e)
    {
        var time = EventJson.FormatTime(e.TimeUnixNano);
        return
        [
            time.Length > 23 ? time[..23] : time,
            e.Node,
            EventJson.TypeName(e.Type),
            Endpoint(e.Source),
            Endpoint(e.Destination),
            Summary(e),
        ];
    }

    private static string Endpoint(Api.V1.Endpoint? ep)
    {
        if (ep is null)
        {
            return "";
        }
        var ip = EventJson.FormatIp(ep.Ip);
        var address = ip.Length == 0 ? "" : ip.Contains(':') ? $"[{ip}]:{ep.Port}" : $"{ip}:{ep.Port}";
        var who = ep.Workload.Length > 0 ? ep.Workload : ep.Process;
        if (ep.Pid != 0)
        {
            who = $"{who}({ep.Pid})";
        }
        return who.Length == 0 ? address : $"{address} {who}".Trim();
    }

    private static string Summary(Event e) => e.Flow is { } f
        ? string.Create(CultureInfo.InvariantCulture,
            $"{EventJson.ProtocolName(f.Protocol)} {f.State} {f.DurationNs / 1e6:0.###}ms sent={f.BytesSent} recv={f.BytesReceived}")
        : e.Dns is { } d ? $"{d.Qtype} {d.Query} {d.Rcode}"
        : e.Process is { } p ? $"{p.Exe} {string.Join(' ', p.Args)}"
        : e.File is { } file ? $"{file.Op} {file.Path}"
        : "";
}
