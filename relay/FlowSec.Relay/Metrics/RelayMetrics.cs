using FlowSec.Api.Metrics;
using FlowSec.Relay.Ingest;
using FlowSec.Relay.Pipeline;
using FlowSec.Relay.Storage;

namespace FlowSec.Relay.Metrics;

/// <summary>
/// The relay's Prometheus endpoint (<c>GET /metrics</c> on the UI port): what came in, what was
/// stored, what was skipped as a duplicate and every place storage can fail or drop.
/// </summary>
public static class RelayMetrics
{
    /// <summary>Maps GET /metrics.</summary>
    public static void MapRelayMetrics(this WebApplication app)
    {
        app.MapGet("/metrics", (EventPipeline pipeline, ClickHouseFlowWriter writer, RecentBatches recent, IngestService ingest) =>
            Results.Text(PrometheusText.Render(Samples(pipeline, writer, recent, ingest)), PrometheusText.ContentType));
    }

    /// <summary>The samples for one scrape.</summary>
    public static IEnumerable<MetricSample> Samples(EventPipeline pipeline, ClickHouseFlowWriter writer, RecentBatches recent, IngestService ingest) =>
    [
        new("flowsec_relay_events_received_total", "Events received from sensors", true, pipeline.EventsReceived),
        new("flowsec_relay_events_stored_total", "Events inserted into ClickHouse", true, writer.EventsStored),
        new("flowsec_relay_storage_queue_events", "Events received and waiting for the writer (ingest waits at Relay:StorageQueueEvents)", false, pipeline.EventsQueued),
        new("flowsec_relay_duplicate_events_skipped_total", "Events of re-sent batches already stored, not stored again", true, recent.DuplicateEvents),
        new("flowsec_relay_duplicate_batches_skipped_total", "Re-sent batches (wholly or partly) already stored", true, recent.Duplicates),
        new("flowsec_relay_batches_withdrawn_total", "Unacked batches taken back from the storage queue when their stream ended, not stored here (the sensor re-sends them)", true, pipeline.BatchesWithdrawn),
        new("flowsec_relay_events_withdrawn_total", "Events of withdrawn batches", true, pipeline.EventsWithdrawn),
        new("flowsec_relay_batches_abandoned_total", "Batches taken out of a block before insert because another relay claimed a re-sent copy, not stored here (stored there)", true, writer.BatchesAbandoned),
        new("flowsec_relay_events_abandoned_total", "Events of abandoned batches", true, writer.EventsAbandoned),
        // Not a loss: such a batch is parsed in full (or refused with the parser's error); a rising
        // count says ingest is paying the slow path (invalid UTF-8 from a sensor, or a decoder bug).
        new("flowsec_relay_batches_full_parsed_total", "Batches the column decoder handed to the full protobuf parser (refused input included)", true, ingest.BatchesHandedToProtobuf),
        new("flowsec_relay_insert_errors_total", "Failed ClickHouse insert or schema attempts, each retried", true, writer.InsertErrors),
        new("flowsec_relay_unknown_inserts_found_stored_total", "Inserts that failed without an answer but had gone in, so were not sent again", true, writer.UnknownInsertsFoundStored),
        new("flowsec_relay_events_not_stored_total", "Events of a type no table exists for", true, writer.EventsNotStored),
        new("flowsec_relay_events_dropped_total", "Events lost because the relay stopped while ClickHouse refused them", true, writer.EventsDropped),
    ];
}
