using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using FlowSec.Api.V1;

namespace FlowSec.Api.Json;

/// <summary>
/// The JSON shape of an <see cref="Event"/> that users see: one object per line from
/// <c>flowsec query -o json</c>, and the payload the browser receives. snake_case names;
/// empty strings, zero pids and empty collections are omitted from endpoints so output stays readable.
/// </summary>
public static class EventJson
{
    private static readonly JsonWriterOptions Options = new() { Indented = false };

    /// <summary>Renders one event as a single-line JSON object.</summary>
    public static string ToJson(Event e)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, Options))
        {
            Write(writer, e);
        }
        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    /// <summary>Writes one event as a JSON object.</summary>
    public static void Write(Utf8JsonWriter w, Event e)
    {
        w.WriteStartObject();
        w.WriteString("time", FormatTime(e.TimeUnixNano));
        w.WriteString("node", e.Node);
        w.WriteString("type", TypeName(e.Type));
        if (e.Capture.Length > 0)
        {
            w.WriteString("capture", e.Capture);
        }
        if (e.Source is not null)
        {
            w.WritePropertyName("source");
            WriteEndpoint(w, e.Source);
        }
        if (e.Destination is not null)
        {
            w.WritePropertyName("destination");
            WriteEndpoint(w, e.Destination);
        }
        if (e.Flow is not null)
        {
            w.WritePropertyName("flow");
            WriteFlow(w, e.Flow);
        }
        if (e.Dns is not null)
        {
            w.WritePropertyName("dns");
            WriteDns(w, e.Dns);
        }
        if (e.Process is not null)
        {
            w.WritePropertyName("process");
            WriteProcess(w, e.Process);
        }
        if (e.File is not null)
        {
            w.WritePropertyName("file");
            WriteFile(w, e.File);
        }
        if (e.Alert is not null)
        {
            w.WriteStartObject("alert");
            w.WriteString("rule", e.Alert.Rule);
            w.WriteString("priority", e.Alert.Priority);
            w.WriteString("message", e.Alert.Message);
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    /// <summary>The user-facing name of an event type: flow, dns, exec, exit, file, alert.</summary>
    public static string TypeName(EventType type) => type switch
    {
        EventType.Flow => "flow",
        EventType.Dns => "dns",
        EventType.Exec => "exec",
        EventType.Exit => "exit",
        EventType.File => "file",
        EventType.Alert => "alert",
        _ => "unknown",
    };

    /// <summary>The user-facing name of an L4 protocol.</summary>
    public static string ProtocolName(Protocol protocol) => protocol switch
    {
        Protocol.Tcp => "tcp",
        Protocol.Udp => "udp",
        Protocol.Icmp => "icmp",
        _ => "unknown",
    };

    /// <summary>The user-facing name of a verdict.</summary>
    public static string VerdictName(Verdict verdict) => verdict switch
    {
        Verdict.Forwarded => "forwarded",
        Verdict.Dropped => "dropped",
        _ => "unknown",
    };

    /// <summary>Formats an address carried as 4 or 16 bytes; empty when absent.</summary>
    public static string FormatIp(Google.Protobuf.ByteString ip) =>
        ip.Length is 4 or 16 ? new IPAddress(ip.Span).ToString() : "";

    /// <summary>RFC 3339 UTC time with nanoseconds, e.g. 2026-11-22T03:00:00.123456789Z.</summary>
    public static string FormatTime(ulong unixNano)
    {
        var seconds = (long)(unixNano / 1_000_000_000);
        var nanos = (long)(unixNano % 1_000_000_000);
        var t = DateTimeOffset.FromUnixTimeSeconds(seconds).UtcDateTime;
        return t.ToString("yyyy-MM-dd'T'HH:mm:ss", CultureInfo.InvariantCulture) + "." +
               nanos.ToString("D9", CultureInfo.InvariantCulture) + "Z";
    }

    private static void WriteEndpoint(Utf8JsonWriter w, Endpoint ep)
    {
        w.WriteStartObject();
        var ip = FormatIp(ep.Ip);
        if (ip.Length > 0)
        {
            w.WriteString("ip", ip);
            w.WriteNumber("port", ep.Port);
        }
        if (ep.Pid != 0)
        {
            w.WriteNumber("pid", ep.Pid);
        }
        WriteIfSet(w, "process", ep.Process);
        if (ep.CgroupId != 0)
        {
            w.WriteNumber("cgroup_id", ep.CgroupId);
        }
        WriteIfSet(w, "container_id", ep.ContainerId);
        WriteIfSet(w, "workload", ep.Workload);
        WriteIfSet(w, "pod", ep.Pod);
        WriteIfSet(w, "namespace", ep.Namespace);
        if (ep.Labels.Count > 0)
        {
            w.WriteStartObject("labels");
            foreach (var (key, value) in ep.Labels.OrderBy(l => l.Key, StringComparer.Ordinal))
            {
                w.WriteString(key, value);
            }
            w.WriteEndObject();
        }
        if (ep.Names.Count > 0)
        {
            w.WriteStartArray("names");
            foreach (var name in ep.Names)
            {
                w.WriteStringValue(name);
            }
            w.WriteEndArray();
        }
        w.WriteEndObject();
    }

    private static void WriteFlow(Utf8JsonWriter w, Flow f)
    {
        w.WriteStartObject();
        w.WriteString("protocol", ProtocolName(f.Protocol));
        w.WriteString("state", f.State);
        w.WriteNumber("duration_ms", Math.Round(f.DurationNs / 1e6, 3));
        WriteIfSet(w, "direction", f.Direction);
        w.WriteString("verdict", VerdictName(f.Verdict));
        WriteIfSet(w, "drop_reason", f.DropReason);
        w.WriteNumber("bytes_sent", f.BytesSent);
        w.WriteNumber("bytes_received", f.BytesReceived);
        w.WriteNumber("packets_sent", f.PacketsSent);
        w.WriteNumber("packets_received", f.PacketsReceived);
        w.WriteNumber("rtt_us", f.RttUs);
        w.WriteNumber("retransmits", f.Retransmits);
        w.WriteEndObject();
    }

    private static void WriteDns(Utf8JsonWriter w, DnsLookup d)
    {
        w.WriteStartObject();
        w.WriteString("query", d.Query);
        w.WriteString("qtype", d.Qtype);
        WriteIfSet(w, "rcode", d.Rcode);
        w.WriteStartArray("answers");
        foreach (var a in d.Answers)
        {
            w.WriteStartObject();
            w.WriteString("name", a.Name);
            w.WriteString("type", a.Type);
            w.WriteString("data", a.Data);
            w.WriteNumber("ttl", a.Ttl);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteNumber("latency_us", d.LatencyUs);
        WriteIfSet(w, "transport", d.Transport);
        w.WriteEndObject();
    }

    private static void WriteProcess(Utf8JsonWriter w, ProcessInfo p)
    {
        w.WriteStartObject();
        w.WriteNumber("pid", p.Pid);
        w.WriteNumber("ppid", p.Ppid);
        w.WriteNumber("uid", p.Uid);
        w.WriteString("exe", p.Exe);
        w.WriteStartArray("args");
        foreach (var arg in p.Args)
        {
            w.WriteStringValue(arg);
        }
        w.WriteEndArray();
        WriteIfSet(w, "parent_exe", p.ParentExe);
        if (p.ExitCode != 0 || p.LifetimeNs != 0)
        {
            w.WriteNumber("exit_code", p.ExitCode);
            w.WriteNumber("lifetime_ms", Math.Round(p.LifetimeNs / 1e6, 3));
        }
        w.WriteEndObject();
    }

    private static void WriteFile(Utf8JsonWriter w, FileActivity f)
    {
        w.WriteStartObject();
        w.WriteString("path", f.Path);
        w.WriteString("op", f.Op);
        w.WriteNumber("flags", f.Flags);
        w.WriteNumber("result", f.Result);
        WriteIfSet(w, "new_path", f.NewPath);
        w.WriteEndObject();
    }

    private static void WriteIfSet(Utf8JsonWriter w, string name, string value)
    {
        if (value.Length > 0)
        {
            w.WriteString(name, value);
        }
    }
}
