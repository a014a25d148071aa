using System.Text.Json;
using FlowSec.Api.V1;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Relay.Storage;

/// <summary>The <c>dns</c> table: common columns, client (source) and server (destination) endpoints, the lookup.</summary>
internal static class DnsTable
{
    private static readonly DnsLookup Empty = new();

    /// <summary>
    /// The table. Sort key for "which names did pod X resolve, and what did they answer": hour
    /// bucket, client namespace and pod, then the query name. Answers are parallel arrays (the
    /// layout of a Nested column), one element per answer record.
    /// </summary>
    public static EventTable Table { get; } = new(
        "dns",
        [EventType.Dns],
        [
            .. EventColumns.Common(),
            .. EndpointColumns.Source(),
            .. EndpointColumns.Destination(),
            Col("query", "String", (w, d) => w.WriteString(d.Query), (d, v) => d.Query = v.GetString()!),
            Col("qtype", "LowCardinality(String)", (w, d) => w.WriteString(d.Qtype), (d, v) => d.Qtype = v.GetString()!),
            Col("rcode", "LowCardinality(String)", (w, d) => w.WriteString(d.Rcode), (d, v) => d.Rcode = v.GetString()!),
            Col("answers.name", "Array(String)", (w, d) => w.WriteArray(d.Answers, (w2, a) => w2.WriteString(a.Name)), (_, _) => { }),
            Col("answers.type", "Array(LowCardinality(String))", (w, d) => w.WriteArray(d.Answers, (w2, a) => w2.WriteString(a.Type)), (_, _) => { }),
            Col("answers.data", "Array(String)", (w, d) => w.WriteArray(d.Answers, (w2, a) => w2.WriteString(a.Data)), (_, _) => { }),
            // The four answer arrays are read together, when the last one comes by.
            new("answers.ttl", "Array(UInt32)", (w, e) => w.WriteArray((e.Dns ?? Empty).Answers, (w2, a) => w2.WriteUInt32(a.Ttl)),
                (e, row) => ReadAnswers(e.Dns ??= new DnsLookup(), row)),
            Col("latency_us", "UInt64", (w, d) => w.WriteUInt64(d.LatencyUs), (d, v) => d.LatencyUs = EventColumns.UInt64(v)),
            Col("id", "UInt32", (w, d) => w.WriteUInt32(d.Id), (d, v) => d.Id = v.GetUInt32()),
            Col("is_response", "UInt8", (w, d) => w.WriteUInt8(d.IsResponse ? (byte)1 : (byte)0), (d, v) => d.IsResponse = v.GetByte() != 0),
            // Added by a migration (tables created before it have it last too): "udp" or "tcp".
            Col("transport", "LowCardinality(String)", (w, d) => w.WriteString(d.Transport), (d, v) => d.Transport = v.GetString()!),
        ],
        EventColumns.Engine("query"),
        () => new Event { Type = EventType.Dns, Source = new Endpoint(), Destination = new Endpoint(), Dns = new DnsLookup() });

    private static EventColumn Col(string name, string type, Action<RowBinaryWriter, DnsLookup> write, Action<DnsLookup, JsonElement> read) =>
        EventColumn.Of(name, type, e => e.Dns, e => e.Dns ??= new DnsLookup(), Empty, write, read);

    private static void ReadAnswers(DnsLookup dns, JsonElement row)
    {
        var names = row.GetProperty("answers.name");
        var types = row.GetProperty("answers.type");
        var data = row.GetProperty("answers.data");
        var ttls = row.GetProperty("answers.ttl");
        for (var i = 0; i < names.GetArrayLength(); i++)
        {
            dns.Answers.Add(new DnsAnswer
            {
                Name = names[i].GetString()!,
                Type = types[i].GetString()!,
                Data = data[i].GetString()!,
                Ttl = ttls[i].GetUInt32(),
            });
        }
    }
}
