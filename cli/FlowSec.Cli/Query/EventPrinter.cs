using System.Globalization;
using FlowSec.Api.Json;
using FlowSec.Api.V1;

namespace FlowSec.Cli.Query;

/// <summary>
/// Writes events as they arrive, in one of three forms: <c>json</c> (one object per line, for
/// scripts), <c>compact</c> (one readable line, like <c>hubble observe</c>) or <c>table</c>
/// (fixed columns under a header).
/// </summary>
public sealed class EventPrinter(TextWriter output, string format)
{
    private bool _headerWritten;

    /// <summary>Writes one event.</summary>
    public void Write(Event e)
    {
        switch (format)
        {
            case "json":
                output.WriteLine(EventJson.ToJson(e));
                break;
            case "compact":
                output.WriteLine($"{Time(e)} [{e.Node}] {EventJson.TypeName(e.Type),-5} {Endpoint(e.Source)} -> {Endpoint(e.Destination)} {Summary(e)}".Replace("  ", " ", StringComparison.Ordinal));
                break;
            default:
                if (!_headerWritten)
                {
                    output.WriteLine(Row("TIME", "NODE", "TYPE", "SOURCE", "DESTINATION", "SUMMARY"));
                    _headerWritten = true;
                }
                output.WriteLine(Row(Time(e), e.Node, EventJson.TypeName(e.Type), Endpoint(e.Source), Endpoint(e.Destination), Summary(e)));
                break;
        }
    }

    private static string Row(string time, string node, string type, string source, string destination, string summary) =>
        $"{time,-23}  {node,-12}  {type,-5}  {source,-40}  {destination,-40}  {summary}".TrimEnd();

    private static string Time(Event e)
    {
        var time = EventJson.FormatTime(e.TimeUnixNano);
        return time.Length > 23 ? time[..23] : time;
    }

    private static string Endpoint(Api.V1.Endpoint? ep)
    {
        if (ep is null)
        {
            return "";
        }
        var ip = EventJson.FormatIp(ep.Ip);
        var address = ip.Length == 0 ? "" : ip.Contains(':', StringComparison.Ordinal) ? $"[{ip}]:{ep.Port}" : $"{ip}:{ep.Port}";
        var who = ep.Pod.Length > 0 ? $"{ep.Namespace}/{ep.Pod}" : ep.Workload.Length > 0 ? ep.Workload : ep.Process;
        if (ep.Pid != 0)
        {
            who = $"{who}({ep.Pid})";
        }
        if (ep.Names.Count > 0)
        {
            address = $"{ep.Names[0]} {address}";
        }
        return who.Length == 0 ? address : $"{address} {who}".Trim();
    }

    private static string Summary(Event e) => e.Flow is { } f
        ? string.Create(CultureInfo.InvariantCulture,
            $"{EventJson.ProtocolName(f.Protocol)} {f.State}{(f.Verdict == Verdict.Dropped ? " DROPPED " + f.DropReason : "")} {f.DurationNs / 1e6:0.###}ms sent={f.BytesSent} recv={f.BytesReceived}")
        : e.Dns is { } d ? $"{d.Qtype} {d.Query} {d.Rcode} {string.Join(',', d.Answers.Select(a => a.Data))}"
        : e.Process is { } p ? $"{p.Exe} {string.Join(' ', p.Args)}{(e.Type == EventType.Exit ? $" exit={p.ExitCode}" : "")}"
        : e.File is { } file ? $"{file.Op} {file.Path} result={file.Result}"
        : e.Alert is { } alert ? $"{alert.Priority} {alert.Rule}: {alert.Message}"
        : "";
}
