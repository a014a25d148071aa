using System.CommandLine;
using FlowSec.Api.Filters;
using FlowSec.Api.V1;

namespace FlowSec.Cli.Observe;

/// <summary>
/// Hubble-like filter flags shared by <c>observe</c> and <c>query</c>; together they form one
/// allow filter (flags AND, repeated values OR). Typed values are checked here, so a typo is an
/// error message, not an empty result.
/// </summary>
public sealed class FilterOptions
{
    private readonly Option<string[]> _node = Many("--node", "Node name");
    private readonly Option<string[]> _namespace = Many("--namespace", "Namespace of either side");
    private readonly Option<string[]> _pod = Many("--pod", "Pod of either side ([namespace/]pod)");
    private readonly Option<string[]> _fromPod = Many("--from-pod", "Source pod ([namespace/]pod)");
    private readonly Option<string[]> _toPod = Many("--to-pod", "Destination pod ([namespace/]pod)");
    private readonly Option<string[]> _workload = Many("--workload", "Workload of either side");
    private readonly Option<string[]> _label = Many("--label", "Label of either side: key=value or key");
    private readonly Option<string[]> _ip = Many("--ip", "IP or CIDR of either side");
    private readonly Option<string[]> _fromIp = Many("--from-ip", "Source IP or CIDR");
    private readonly Option<string[]> _toIp = Many("--to-ip", "Destination IP or CIDR");
    private readonly Option<uint[]> _port = new("--port") { Description = "Port of either side", AllowMultipleArgumentsPerToken = true };
    private readonly Option<uint[]> _toPort = new("--to-port") { Description = "Destination port", AllowMultipleArgumentsPerToken = true };
    private readonly Option<string[]> _protocol = Many("--protocol", "tcp, udp or icmp");
    private readonly Option<string[]> _type = Many("--type", "flow, dns, exec, exit, file or alert");
    private readonly Option<string[]> _verdict = Many("--verdict", "forwarded or dropped");
    private readonly Option<string[]> _dns = Many("--dns", "DNS name: exact or *.suffix");
    private readonly Option<string[]> _process = Many("--process", "Process name of either side");

    private static Option<string[]> Many(string name, string description) =>
        new(name) { Description = description, AllowMultipleArgumentsPerToken = true };

    /// <summary>Adds every filter flag to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { _node, _namespace, _pod, _fromPod, _toPod, _workload, _label, _ip, _fromIp, _toIp,
                     _port, _toPort, _protocol, _type, _verdict, _dns, _process })
        {
            command.Options.Add(option);
        }
    }

    /// <summary>The allow filter the flags describe, or null when none was given.</summary>
    /// <exception cref="FormatException">A value is not one of the accepted words.</exception>
    public EventFilter? Build(ParseResult parse)
    {
        var f = new EventFilter();
        f.Node.AddRange(Values(parse, _node));
        f.Namespace.AddRange(Values(parse, _namespace));
        f.Pod.AddRange(Values(parse, _pod));
        f.SourcePod.AddRange(Values(parse, _fromPod));
        f.DestinationPod.AddRange(Values(parse, _toPod));
        f.Workload.AddRange(Values(parse, _workload));
        f.Label.AddRange(Values(parse, _label));
        f.Ip.AddRange(Values(parse, _ip));
        f.SourceIp.AddRange(Values(parse, _fromIp));
        f.DestinationIp.AddRange(Values(parse, _toIp));
        f.Port.AddRange(parse.GetValue(_port) ?? []);
        f.DestinationPort.AddRange(parse.GetValue(_toPort) ?? []);
        f.Protocol.AddRange(Values(parse, _protocol).Select(p => Word(p, "protocol",
            ("tcp", Protocol.Tcp), ("udp", Protocol.Udp), ("icmp", Protocol.Icmp))));
        f.EventType.AddRange(Values(parse, _type).Select(t => Word(t, "type",
            ("flow", EventType.Flow), ("dns", EventType.Dns), ("exec", EventType.Exec), ("exit", EventType.Exit), ("file", EventType.File), ("alert", EventType.Alert))));
        f.Verdict.AddRange(Values(parse, _verdict).Select(v => Word(v, "verdict", ("forwarded", Verdict.Forwarded), ("dropped", Verdict.Dropped))));
        f.DnsName.AddRange(Values(parse, _dns));
        f.Process.AddRange(Values(parse, _process));
        try
        {
            // The relay validates too; checking here makes a bad CIDR or port a usage error (exit 2).
            _ = new CompiledEventFilter(f);
        }
        catch (ArgumentException ex)
        {
            throw new FormatException(ex.Message, ex);
        }
        return f.CalculateSize() == 0 ? null : f;
    }

    private static IEnumerable<string> Values(ParseResult parse, Option<string[]> option) =>
        (parse.GetValue(option) ?? []).SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    private static T Word<T>(string value, string what, params (string Name, T Value)[] words) =>
        words.FirstOrDefault(w => string.Equals(w.Name, value, StringComparison.OrdinalIgnoreCase)) is { Name: not null } hit
            ? hit.Value
            : throw new FormatException($"unknown {what} '{value}': use {string.Join(", ", words.Select(w => w.Name))}");
}
