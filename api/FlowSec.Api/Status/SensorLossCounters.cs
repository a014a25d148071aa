namespace FlowSec.Api.Status;

/// <summary>
/// Which of a sensor's counters count lost events (as opposed to activity or sizes), so that
/// <c>flowsec status</c> can show one LOST figure per node and name what makes it up. The sensor
/// names every drop point by suffix: <c>*_dropped</c> (ring-buffer reserve failures, queue
/// overflow, unnormalized paths), <c>*_lost</c> (kernel map entries never drained),
/// <c>*_malformed</c> (records or packets that could not be decoded), <c>*_table_full</c> and
/// <c>*_insert_failed</c> (kernel maps out of room), <c>*_dropped_events</c> (spool full) and
/// <c>*_dropped_no_spool</c> (shutdown without relay or spool).
/// </summary>
public static class SensorLossCounters
{
    private static readonly string[] Suffixes =
        ["_dropped", "_lost", "_malformed", "_table_full", "_insert_failed", "_dropped_events", "_dropped_no_spool"];

    /// <summary>Whether the counter <paramref name="name"/> counts lost events.</summary>
    public static bool IsLoss(string name) => Suffixes.Any(s => name.EndsWith(s, StringComparison.Ordinal));

    /// <summary>The sum of the loss counters in <paramref name="counters"/>.</summary>
    public static ulong Total(IEnumerable<KeyValuePair<string, ulong>> counters) =>
        counters.Where(c => IsLoss(c.Key)).Aggregate(0UL, (sum, c) => sum + c.Value);
}
