using FlowSec.Api.V1;
using FlowSec.Relay.Pipeline;
using FlowSec.Relay.Storage;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace FlowSec.Tests.Storage;

/// <summary>
/// Flow events through the real pipeline, the writer and ClickHouse, read back by our query and by
/// the real clickhouse-client; services wired by <see cref="ClickHouseStorageExtensions.AddClickHouseStorage"/>.
/// </summary>
public sealed class FlowStorageTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Flows_written_through_the_pipeline_read_back_equal()
    {
        const int count = 2_000;
        var flows = TestFlows.Flows(count);
        await using var relay = await StartAsync(ch.Server.Url, ClickHouseServer.NewDatabase(), batchMaxRows: 500);

        foreach (var chunk in flows.Chunk(100))
        {
            var batch = new EventBatch { Node = "n" };
            batch.Events.AddRange(chunk);
            batch.Events.Add(new Event { Type = (EventType)42, TimeUnixNano = TestFlows.BaseNs }); // no table for this type: counted, not stored
            await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
        }

        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == count, Timeout,
            () => $"stored {relay.Writer.EventsStored}/{count}, last error {relay.Writer.LastError}");
        relay.Writer.Inserts.Should().BeGreaterThanOrEqualTo(count / 500, "batches are bounded by BatchMaxRows");
        relay.Writer.EventsNotStored.Should().Be(20);
        relay.Writer.InsertErrors.Should().Be(0);

        var read = await relay.Store.QueryFlowsAsync(new EventQuery(), CancellationToken.None);

        read.Select(e => e.ToString()).Should().Equal(flows.Select(e => e.ToString()));
        read.Should().Equal(flows);
    }

    [Fact]
    public async Task Default_limits_store_a_full_batch_of_wide_flows_as_one_insert_and_one_part()
    {
        // Every part costs ClickHouse merges later (see ClickHouseOptions.BatchMaxRows), so the byte
        // limit must not cut a batch of wide flows (three labels, two names each) before the row limit.
        var defaults = new ClickHouseOptions();
        var db = ClickHouseServer.NewDatabase();
        await using var relay = await StartAsync(ch.Server.Url, db, defaults.BatchMaxRows, batchMaxBytes: defaults.BatchMaxBytes, flushInterval: "01:00:00");

        var count = defaults.BatchMaxRows;
        foreach (var chunk in Enumerable.Range(0, count).Chunk(4_096))
        {
            var batch = new EventBatch { Node = "n" };
            batch.Events.AddRange(chunk.Select(i => TestFlows.Flow(i % 50_000))); // TestFlows' IPv6 addresses allow i < 65,536
            await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
        }

        // Only a full batch is sent (the flush interval is an hour), so the first insert shows where the limits cut.
        await Eventually.HoldsAsync(() => relay.Writer.Inserts >= 1, TimeSpan.FromSeconds(120),
            () => $"no insert yet, last error {relay.Writer.LastError}");
        relay.Writer.EventsStored.Should().Be(count, "the row limit, not the byte limit, closes the batch");
        (await ch.RunClientAsync($"SELECT count(), sum(rows) FROM system.parts WHERE active AND database = '{db}' AND table = 'flows' FORMAT TabSeparated"))
            .Trim().Should().Be($"1\t{count}");
    }

    [Fact]
    public async Task The_real_client_reads_what_the_writer_inserted()
    {
        var db = ClickHouseServer.NewDatabase();
        var flows = TestFlows.Flows(50);
        await using var relay = await StartAsync(ch.Server.Url, db);
        var batch = new EventBatch();
        batch.Events.AddRange(flows);
        await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == flows.Count, Timeout, () => $"stored {relay.Writer.EventsStored}");

        var summary = await ch.RunClientAsync(
            $"SELECT count(), sum(bytes_received), sum(packets_sent), countIf(protocol = 'TCP'), countIf(verdict = 'dropped'), uniqExact(node), min(time_ns), max(time) " +
            $"FROM {db}.flows FORMAT TabSeparated");
        summary.Trim().Should().Be(string.Join('\t',
            flows.Count, flows.Sum(f => (long)f.Flow.BytesReceived), flows.Sum(f => (long)f.Flow.PacketsSent),
            flows.Count(f => f.Flow.Protocol == Protocol.Tcp), flows.Count(f => f.Flow.Verdict == Verdict.Dropped), 4,
            flows.Min(f => f.TimeUnixNano), DateTimeOffset.FromUnixTimeSeconds((long)(flows.Max(f => f.TimeUnixNano) / 1_000_000_000)).ToString("yyyy-MM-dd HH:mm:ss")));

        var rows = await ch.RunClientAsync(
            "SELECT time_ns, IPv6NumToString(src_ip), src_port, src_pid, hex(src_process), src_cgroup_id, src_namespace, src_pod, " +
            "hex(src_labels_text), IPv6NumToString(dst_ip), dst_port, hex(dst_names_text), " +
            "toInt8(protocol), state, duration_ns, direction, bytes_sent, rtt_us, retransmits, socket_id " +
            $"FROM {db}.flows ORDER BY time_ns FORMAT TabSeparated");
        rows.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal(flows.Select(f => string.Join('\t',
            f.TimeUnixNano, Ip(f.Source.Ip), f.Source.Port, f.Source.Pid, Convert.ToHexString(System.Text.Encoding.UTF8.GetBytes(f.Source.Process)),
            f.Source.CgroupId, f.Source.Namespace, f.Source.Pod, Hex(PackedStrings.Labels(f.Source.Labels)),
            Ip(f.Destination.Ip), f.Destination.Port, Hex(PackedStrings.Names(f.Destination.Names)), (int)f.Flow.Protocol, f.Flow.State, f.Flow.DurationNs,
            f.Flow.Direction, f.Flow.BytesSent, f.Flow.RttUs, f.Flow.Retransmits, f.Flow.SocketId)));

        static string Hex(string s) => Convert.ToHexString(System.Text.Encoding.UTF8.GetBytes(s));

        static string Ip(Google.Protobuf.ByteString ip)
        {
            var address = new System.Net.IPAddress(ip.Span);
            return address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? "::ffff:" + address : address.ToString();
        }
    }

    [Fact]
    public async Task A_query_returns_the_newest_flows_of_the_window_oldest_first()
    {
        var flows = TestFlows.Flows(100); // flow i at BaseNs + i ms + i ns
        await using var relay = await StartAsync(ch.Server.Url, ClickHouseServer.NewDatabase());
        var batch = new EventBatch();
        batch.Events.AddRange(flows);
        await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == flows.Count, Timeout, () => $"stored {relay.Writer.EventsStored}");

        var since = At(flows[10].TimeUnixNano); // since is inclusive, until exclusive, both exact to the nanosecond
        var until = At(flows[60].TimeUnixNano);

        var window = await relay.Store.QueryFlowsAsync(new EventQuery(since, until), CancellationToken.None);
        var newest = await relay.Store.QueryFlowsAsync(new EventQuery(since, until, Limit: 5), CancellationToken.None);
        var last3 = await relay.Store.QueryFlowsAsync(new EventQuery(Limit: 3), CancellationToken.None);

        window.Select(e => e.TimeUnixNano).Should().Equal(flows.Where(f => f.TimeUnixNano >= Ns(since) && f.TimeUnixNano < Ns(until)).Select(f => f.TimeUnixNano));
        newest.Should().Equal(window.TakeLast(5));
        last3.Should().Equal(flows.TakeLast(3));
        var bad = () => relay.Store.QueryFlowsAsync(new EventQuery(Limit: 0), CancellationToken.None);
        await bad.Should().ThrowAsync<ArgumentOutOfRangeException>();
    }

    private static DateTimeOffset At(ulong ns) => DateTimeOffset.UnixEpoch.AddTicks((long)(ns / 100));

    private static ulong Ns(DateTimeOffset t) => (ulong)(t - DateTimeOffset.UnixEpoch).Ticks * 100;

    /// <summary>Starts the storage services as the relay registers them, against <paramref name="url"/>.</summary>
    internal static async Task<StorageHost> StartAsync(string url, string database, int batchMaxRows = 50_000, int queueBatches = 256,
        int batchMaxBytes = 64 << 20, string flushInterval = "00:00:00.200", IReadOnlyDictionary<string, string?>? settings = null)
    {
        var values = new Dictionary<string, string?>
        {
            ["ClickHouse:Url"] = url,
            ["ClickHouse:Database"] = database,
            ["ClickHouse:BatchMaxRows"] = batchMaxRows.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["ClickHouse:BatchMaxBytes"] = batchMaxBytes.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["ClickHouse:FlushInterval"] = flushInterval,
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            values["ClickHouse:" + key] = value;
        }

        var configuration = new ConfigurationBuilder().AddInMemoryCollection(values).Build();
        var services = new ServiceCollection()
            .AddLogging()
            .AddSingleton(new EventPipeline([], queueBatches))
            .AddClickHouseStorage(configuration)
            .BuildServiceProvider();
        var host = new StorageHost(services);
        foreach (var hosted in services.GetServices<IHostedService>())
        {
            await hosted.StartAsync(CancellationToken.None);
        }

        return host;
    }
}

/// <summary>The storage services of one test, stopped and disposed at the end.</summary>
internal sealed class StorageHost(ServiceProvider services) : IAsyncDisposable
{
    public EventPipeline Pipeline => services.GetRequiredService<EventPipeline>();

    public ClickHouseFlowWriter Writer => services.GetRequiredService<ClickHouseFlowWriter>();

    public ClickHouseEventStore Store => services.GetRequiredService<ClickHouseEventStore>();

    public StoredBatches Ledger => services.GetRequiredService<StoredBatches>();

    public async ValueTask DisposeAsync()
    {
        foreach (var hosted in services.GetServices<IHostedService>())
        {
            await hosted.StopAsync(CancellationToken.None);
        }

        await services.DisposeAsync();
    }
}
