using System.Text.Json;
using FlowSec.Api.V1;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Relay.Storage;

/// <summary>
/// The <c>process_events</c> table: exec and exit events in one table, told apart by the
/// <c>event</c> column, so a process's life is one range scan; the actor is the source endpoint.
/// </summary>
internal static class ProcessTable
{
    private static readonly ProcessInfo Empty = new();

    // Values are the EventType numbers, so the column converts both ways without a second table.
    private static readonly Dictionary<string, EventType> EventNames = new() { ["exec"] = EventType.Exec, ["exit"] = EventType.Exit };

    /// <summary>
    /// The table. Sort key for "which processes ran in pod X, and what did process N do": hour
    /// bucket, the actor's namespace and pod, then pid.
    /// </summary>
    public static EventTable Table { get; } = new(
        "process_events",
        [EventType.Exec, EventType.Exit],
        [
            .. EventColumns.Common(),
            EventColumn.Of("event", EventColumns.Enum8(EventNames), (w, e) => w.WriteEnum8((sbyte)e.Type), (e, v) => e.Type = EventNames[v.GetString()!]),
            .. EndpointColumns.Source(),
            Col("pid", "UInt32", (w, p) => w.WriteUInt32(p.Pid), (p, v) => p.Pid = v.GetUInt32()),
            Col("ppid", "UInt32", (w, p) => w.WriteUInt32(p.Ppid), (p, v) => p.Ppid = v.GetUInt32()),
            Col("uid", "UInt32", (w, p) => w.WriteUInt32(p.Uid), (p, v) => p.Uid = v.GetUInt32()),
            Col("exe", "String", (w, p) => w.WriteString(p.Exe), (p, v) => p.Exe = v.GetString()!),
            Col("args", "Array(String)", (w, p) => EventColumns.WriteStrings(w, p.Args), (p, v) => p.Args.AddRange(EventColumns.ReadStrings(v))),
            Col("exit_code", "Int32", (w, p) => w.WriteInt32(p.ExitCode), (p, v) => p.ExitCode = v.GetInt32()),
            Col("parent_exe", "String", (w, p) => w.WriteString(p.ParentExe), (p, v) => p.ParentExe = v.GetString()!),
            Col("lifetime_ns", "UInt64", (w, p) => w.WriteUInt64(p.LifetimeNs), (p, v) => p.LifetimeNs = EventColumns.UInt64(v)),
        ],
        EventColumns.Engine("pid"),
        () => new Event { Source = new Endpoint(), Process = new ProcessInfo() },
        requested => requested.Contains(EventType.Exec) && requested.Contains(EventType.Exit)
            ? null
            : "event IN " + "(" + string.Join(", ", EventNames.Where(n => requested.Contains(n.Value)).Select(n => SqlLiteral.String(n.Key))) + ")");

    private static EventColumn Col(string name, string type, Action<RowBinaryWriter, ProcessInfo> write, Action<ProcessInfo, JsonElement> read) =>
        EventColumn.Of(name, type, e => e.Process, e => e.Process ??= new ProcessInfo(), Empty, write, read);
}
