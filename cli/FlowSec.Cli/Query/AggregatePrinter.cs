using System.Text.Json;
using FlowSec.Api.V1;

namespace FlowSec.Cli.Query;

/// <summary>
/// Writes the groups of <c>flowsec query --group-by</c>: a table (one column per group-by field,
/// then COUNT, BYTES_SENT, BYTES_RECEIVED) or JSON (one object per group, keyed by field name).
/// </summary>
public static class AggregatePrinter
{
    /// <summary>Writes <paramref name="response"/> in <paramref name="format"/> (<c>json</c>, or a table for anything else).</summary>
    public static void Write(TextWriter output, AggregateResponse response, string format)
    {
        if (format == "json")
        {
            foreach (var group in response.Groups)
            {
                using var buffer = new MemoryStream();
                using (var w = new Utf8JsonWriter(buffer))
                {
                    w.WriteStartObject();
                    for (var i = 0; i < response.GroupBy.Count; i++)
                    {
                        w.WriteString(response.GroupBy[i], group.Keys[i]);
                    }
                    w.WriteNumber("count", group.Count);
                    w.WriteNumber("bytes_sent", group.BytesSent);
                    w.WriteNumber("bytes_received", group.BytesReceived);
                    w.WriteEndObject();
                }
                output.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
            }
            return;
        }

        string[] header = [.. response.GroupBy.Select(g => g.ToUpperInvariant()), "COUNT", "BYTES_SENT", "BYTES_RECEIVED"];
        var rows = response.Groups.Select(g => (string[])[.. g.Keys.Select(k => k.Length == 0 ? "-" : k), $"{g.Count}", $"{g.BytesSent}", $"{g.BytesReceived}"]).ToList();
        var widths = header.Select((h, i) => rows.Select(r => r[i].Length).Append(h.Length).Max()).ToArray();
        output.WriteLine(Line(header, widths));
        foreach (var row in rows)
        {
            output.WriteLine(Line(row, widths));
        }
    }

    private static string Line(string[] cells, int[] widths) =>
        string.Join("  ", cells.Select((c, i) => c.PadRight(widths[i]))).TrimEnd();
}
