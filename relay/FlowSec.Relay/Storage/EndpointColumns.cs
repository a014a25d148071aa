using System.Text.Json;
using FlowSec.Api.V1;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Relay.Storage;

/// <summary>
/// The column set of one <see cref="Endpoint"/> (<c>{prefix}_ip</c>, <c>_port</c>, … <c>_names_text</c>),
/// shared by every table: flows and DNS have a source and a destination, process and file events
/// have their actor as source. The same prefix on every table keeps pod, namespace and label
/// filters the same SQL everywhere.
/// </summary>
internal static class EndpointColumns
{
    private static readonly Endpoint Empty = new();

    /// <summary>The endpoint's labels column, after the side prefix: <see cref="PackedStrings"/> labels.</summary>
    public const string LabelsColumn = "labels_text";

    /// <summary>The endpoint's DNS names column, after the side prefix: <see cref="PackedStrings"/> names.</summary>
    public const string NamesColumn = "names_text";

    /// <summary>The event's source endpoint (<c>src_</c>): a flow's or DNS lookup's client, a process or file event's actor.</summary>
    public static IEnumerable<EventColumn> Source() => For("src", e => e.Source, e => e.Source ??= new Endpoint());

    /// <summary>The event's destination endpoint (<c>dst_</c>): a flow's peer, a DNS lookup's server.</summary>
    public static IEnumerable<EventColumn> Destination() => For("dst", e => e.Destination, e => e.Destination ??= new Endpoint());

    private static IEnumerable<EventColumn> For(string prefix, Func<Event, Endpoint?> get, Func<Event, Endpoint> getOrCreate)
    {
        EventColumn Col(string name, string type, Action<RowBinaryWriter, Endpoint> write, Action<Endpoint, JsonElement> read) =>
            EventColumn.Of($"{prefix}_{name}", type, get, getOrCreate, Empty, write, read);

        return
        [
            Col("ip", "FixedString(16)", (w, p) => WriteIp(w, p.Ip.Span), (p, v) => p.Ip = IpFromFixed16(v.GetString()!)),
            Col("port", "UInt16", (w, p) => w.WriteUInt16((ushort)p.Port), (p, v) => p.Port = v.GetUInt32()),
            Col("pid", "UInt32", (w, p) => w.WriteUInt32(p.Pid), (p, v) => p.Pid = v.GetUInt32()),
            Col("process", "LowCardinality(String)", (w, p) => w.WriteString(p.Process), (p, v) => p.Process = v.GetString()!),
            Col("cgroup_id", "UInt64", (w, p) => w.WriteUInt64(p.CgroupId), (p, v) => p.CgroupId = EventColumns.UInt64(v)),
            Col("container_id", "String", (w, p) => w.WriteString(p.ContainerId), (p, v) => p.ContainerId = v.GetString()!),
            Col("workload", "LowCardinality(String)", (w, p) => w.WriteString(p.Workload), (p, v) => p.Workload = v.GetString()!),
            Col("pod", "String", (w, p) => w.WriteString(p.Pod), (p, v) => p.Pod = v.GetString()!),
            Col("namespace", "LowCardinality(String)", (w, p) => w.WriteString(p.Namespace), (p, v) => p.Namespace = v.GetString()!),
            // Labels and names packed into one String each (PackedStrings): arrays cost the server
            // their offsets on every row, most of all on the many rows without names.
            Col(LabelsColumn, "String", (w, p) => PackedStrings.WriteLabels(w, p.Labels), (p, v) => PackedStrings.ReadLabels(v.GetString()!, p.Labels)),
            Col(NamesColumn, "String", (w, p) => PackedStrings.WriteNames(w, p.Names), (p, v) => PackedStrings.ReadNames(v.GetString()!, p.Names)),
        ];
    }

    /// <summary>Writes an address as the FixedString(16) it is stored as: see <see cref="StoreIp"/>.</summary>
    internal static void WriteIp(RowBinaryWriter writer, ReadOnlySpan<byte> ip) => StoreIp(ip, writer.Reserve(16));

    /// <summary>Stores an address into the 16 bytes of its FixedString(16) value: IPv4 as IPv4-mapped IPv6; no address (or a malformed one) as ::.</summary>
    internal static void StoreIp(ReadOnlySpan<byte> ip, Span<byte> v6)
    {
        v6 = v6[..16];
        if (ip.Length == 4)
        {
            v6[..10].Clear();
            v6[10] = 0xff;
            v6[11] = 0xff;
            ip.CopyTo(v6[12..]);
        }
        else if (ip.Length == 16)
        {
            ip.CopyTo(v6);
        }
        else
        {
            v6.Clear();
        }
    }

    private static ByteString IpFromFixed16(string hex)
    {
        var bytes = Convert.FromHexString(hex);
        if (bytes.All(b => b == 0))
        {
            return ByteString.Empty;
        }

        var isV4Mapped = bytes.AsSpan(0, 10).IndexOfAnyExcept((byte)0) < 0 && bytes[10] == 0xff && bytes[11] == 0xff;
        return ByteString.CopyFrom(isV4Mapped ? bytes.AsSpan(12, 4) : bytes);
    }
}
