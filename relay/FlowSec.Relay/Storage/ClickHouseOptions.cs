namespace FlowSec.Relay.Storage;

/// <summary>Where and how the relay stores events in ClickHouse (configuration section "ClickHouse").</summary>
public sealed class ClickHouseOptions
{
    /// <summary>The configuration section these options are bound from.</summary>
    public const string SectionName = "ClickHouse";

    /// <summary>Base URL of the ClickHouse HTTP interface.</summary>
    public string Url { get; set; } = "http://127.0.0.1:8123";

    /// <summary>Database that holds FlowSec's tables; created on start if missing.</summary>
    public string Database { get; set; } = "flowsec";

    /// <summary>ClickHouse user.</summary>
    public string User { get; set; } = "default";

    /// <summary>ClickHouse password.</summary>
    public string Password { get; set; } = "";

    /// <summary>
    /// Largest number of rows sent in one INSERT (per table). Each insert is a part the server
    /// writes (a file or two per column, and a part in each table a materialized view fills) and
    /// merges later, so larger inserts mean fewer parts, one merge level less and fewer small view
    /// parts: in the sustained ingest bench, ClickHouse 18.16 here cost 4.4 CPU µs per flow row with
    /// 200 k-row inserts against 5.3 with 100 k (mean of alternated runs, almost all of it in
    /// background merges; see docs/benchmarks.md, "ClickHouse server's cost per row"). At the
    /// default <see cref="FlushInterval"/> a table reaches this only above 200 k rows/s; below it,
    /// the interval decides the insert size. 400 k (with <see cref="BatchMaxBytes"/> 256 MiB) cut the
    /// server's CPU per row by about 0.35 µs more in that bench (merges), at about 300 MB more relay
    /// RSS and longer inserts, which delay the next batch (alerts included): not the default, an
    /// option for relays that store more than 200 k rows/s (docs/benchmarks.md, sixth session).
    /// </summary>
    public int BatchMaxRows { get; set; } = 200_000;

    /// <summary>
    /// Most encoded bytes the writer holds across all tables before it sends them, so events with
    /// long arguments or paths cannot grow its memory past this (plus one incoming batch).
    /// </summary>
    /// <remarks>
    /// 200 k flow rows hold about 76 MB (Native: values plus where each variable-width value starts),
    /// so this leaves room for wider rows before the byte limit, not the row limit, cuts a batch.
    /// The writer fills the next set of batches while one is being inserted, so it holds up to twice
    /// this: the relay's RSS in the ingest bench went from about 830 MB to 950 MB with 200 k rows.
    /// </remarks>
    public int BatchMaxBytes { get; set; } = 128 * 1024 * 1024;

    /// <summary>Longest time a stored event waits in the writer before its batch is sent.</summary>
    public TimeSpan FlushInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Days of events kept; older day partitions are dropped hourly. 0 keeps everything.</summary>
    public int RetentionDays { get; set; }

    /// <summary>
    /// Whether queries may read the tables derived from flows (hourly summaries for group-by, the
    /// per-minute dst_port counts for the newest flows to a port) where they answer exactly what the flows table
    /// would. Off: every query reads the event tables, as a fallback or to compare the two.
    /// </summary>
    public bool UseFlowSummaries { get; set; } = true;

    /// <summary>
    /// Whether INSERT bodies are gzip-compressed. Null (the default) compresses only when the server
    /// is not on loopback: there the bytes cost nothing to move, while gzip cost the relay about
    /// 1 µs and ClickHouse about 0.3 µs per flow row on this kind of machine.
    /// </summary>
    public bool? CompressInserts { get; set; }

    /// <summary>
    /// The wire format of inserts. <see cref="ClickHouseInsertFormat.Native"/> (the default) is
    /// columnar and the server parses it about three times cheaper than RowBinary;
    /// <see cref="ClickHouseInsertFormat.RowBinary"/> remains for servers that refuse a Native block.
    /// </summary>
    public ClickHouseInsertFormat InsertFormat { get; set; } = ClickHouseInsertFormat.Native;

    /// <summary>
    /// Whether Native inserts send rows sorted by the table's key (the default), which spares the
    /// server its sort; off leaves the sorting to the server (kept to measure the difference).
    /// </summary>
    public bool SortNativeRows { get; set; } = true;

    /// <summary>
    /// How long a relay that claimed a re-sent batch, and found it recorded as <c>inserting</c> by
    /// another relay with no rows in storage, waits (from its claim on) before it looks for that
    /// relay's running insert and the rows once more: it covers the time between the other relay's
    /// last look at the claims and its insert showing in <c>system.processes</c> (one request, a few
    /// milliseconds; longer only if that relay stalls). Only re-sent batches in that state wait. See <see cref="StoredBatches"/>.
    /// </summary>
    public TimeSpan ClaimMargin { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Timeout of one HTTP request to ClickHouse.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(60);
}

/// <summary>How the relay encodes the rows of an INSERT.</summary>
public enum ClickHouseInsertFormat
{
    /// <summary>ClickHouse's columnar <c>Native</c> format: one block per insert, rows sorted by the table's key.</summary>
    Native,

    /// <summary>ClickHouse's <c>RowBinary</c> format: rows one after another, in arrival order.</summary>
    RowBinary,
}
