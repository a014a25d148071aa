using System.Text.Json;
using FlowSec.Api.V1;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Relay.Storage;

/// <summary>The <c>file_events</c> table: common columns, the actor (source endpoint), the file activity.</summary>
internal static class FileTable
{
    private static readonly FileActivity Empty = new();

    /// <summary>
    /// The table. Sort key for "what did pod X touch under /etc": hour bucket, the actor's
    /// namespace and pod, then the path (so a path prefix is a key range).
    /// </summary>
    public static EventTable Table { get; } = new(
        "file_events",
        [EventType.File],
        [
            .. EventColumns.Common(),
            .. EndpointColumns.Source(),
            Col("path", "String", (w, f) => w.WriteString(f.Path), (f, v) => f.Path = v.GetString()!),
            Col("op", "LowCardinality(String)", (w, f) => w.WriteString(f.Op), (f, v) => f.Op = v.GetString()!),
            Col("flags", "UInt32", (w, f) => w.WriteUInt32(f.Flags), (f, v) => f.Flags = v.GetUInt32()),
            Col("result", "Int32", (w, f) => w.WriteInt32(f.Result), (f, v) => f.Result = v.GetInt32()),
            Col("new_path", "String", (w, f) => w.WriteString(f.NewPath), (f, v) => f.NewPath = v.GetString()!),
        ],
        EventColumns.Engine("path"),
        () => new Event { Type = EventType.File, Source = new Endpoint(), File = new FileActivity() });

    private static EventColumn Col(string name, string type, Action<RowBinaryWriter, FileActivity> write, Action<FileActivity, JsonElement> read) =>
        EventColumn.Of(name, type, e => e.File, e => e.File ??= new FileActivity(), Empty, write, read);
}
