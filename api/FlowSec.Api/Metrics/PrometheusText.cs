using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace FlowSec.Api.Metrics;

/// <summary>One sample of a metric, with its labels.</summary>
/// <param name="Name">Metric name (letters, digits, underscores).</param>
/// <param name="Help">One line saying what it counts.</param>
/// <param name="IsCounter">Counter (monotonic) or gauge.</param>
/// <param name="Value">The value.</param>
/// <param name="Labels">Label pairs; values are escaped on output.</param>
public sealed record MetricSample(string Name, string Help, bool IsCounter, double Value,
    IReadOnlyList<KeyValuePair<string, string>>? Labels = null);

/// <summary>
/// Renders samples in the Prometheus text exposition format (version 0.0.4). prometheus-net is
/// not available here; this is the one place FlowSec writes the format.
/// </summary>
public static partial class PrometheusText
{
    /// <summary>The Content-Type of the format.</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>Writes samples grouped by metric name, each group with HELP and TYPE lines.</summary>
    public static string Render(IEnumerable<MetricSample> samples)
    {
        var text = new StringBuilder();
        foreach (var group in samples.GroupBy(s => s.Name, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var name = ValidName().IsMatch(group.Key) ? group.Key : throw new ArgumentException($"bad metric name {group.Key}");
            var first = group.First();
            text.Append("# HELP ").Append(name).Append(' ').Append(first.Help.Replace("\\", "\\\\").Replace("\n", "\\n")).Append('\n');
            text.Append("# TYPE ").Append(name).Append(' ').Append(first.IsCounter ? "counter" : "gauge").Append('\n');
            foreach (var sample in group)
            {
                text.Append(name);
                if (sample.Labels is { Count: > 0 } labels)
                {
                    text.Append('{');
                    for (var i = 0; i < labels.Count; i++)
                    {
                        text.Append(i == 0 ? "" : ",").Append(labels[i].Key).Append("=\"")
                            .Append(labels[i].Value.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n")).Append('"');
                    }
                    text.Append('}');
                }
                text.Append(' ').Append(sample.Value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
            }
        }
        return text.ToString();
    }

    [GeneratedRegex("^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
    private static partial Regex ValidName();
}
