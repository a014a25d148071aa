using System.Text.Json;
using FlowSec.Api.V1;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Relay.Storage;

/// <summary>The <c>alerts</c> table: common columns, the endpoints the alert is about, the rule's finding.</summary>
internal static class AlertTable
{
    private static readonly Alert Empty = new();

    /// <summary>
    /// The table. Sort key for "which alerts fired in pod X, and for which rule": hour bucket, the
    /// source's namespace and pod, then the rule.
    /// </summary>
    public static EventTable Table { get; } = new(
        "alerts",
        [EventType.Alert],
        [
            .. EventColumns.Common(),
            .. EndpointColumns.Source(),
            .. EndpointColumns.Destination(),
            Col("rule", "LowCardinality(String)", (w, a) => w.WriteString(a.Rule), (a, v) => a.Rule = v.GetString()!),
            Col("priority", "LowCardinality(String)", (w, a) => w.WriteString(a.Priority), (a, v) => a.Priority = v.GetString()!),
            Col("message", "String", (w, a) => w.WriteString(a.Message), (a, v) => a.Message = v.GetString()!),
        ],
        EventColumns.Engine("rule"),
        () => new Event { Type = EventType.Alert, Source = new Endpoint(), Destination = new Endpoint(), Alert = new Alert() });

    private static EventColumn Col(string name, string type, Action<RowBinaryWriter, Alert> write, Action<Alert, JsonElement> read) =>
        EventColumn.Of(name, type, e => e.Alert, e => e.Alert ??= new Alert(), Empty, write, read);
}
