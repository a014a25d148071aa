using FlowSec.Api.V1;
using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>
/// The Native insert format against the real server: every column of every table reads back
/// (through the real clickhouse-client) exactly as the same events inserted as RowBinary, rows
/// arrive in the order the server sorts them, and the writer works with either format, gzip or not.
/// </summary>
public sealed class NativeBlockTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    public static TheoryData<string> Tables => new(EventTables.All.Select(t => t.Name));

    private static List<Event> EventsFor(string table, int count) => table switch
    {
        "flows" => TestFlows.Flows(count),
        "dns" => Enumerable.Range(0, count).Select(TestEvents.Dns).ToList(),
        "process_events" => Enumerable.Range(0, count).Select(i => i % 2 == 0 ? TestEvents.Exec(i) : TestEvents.Exit(i)).ToList(),
        "file_events" => Enumerable.Range(0, count).Select(TestEvents.File).ToList(),
        _ => Enumerable.Range(0, count).Select(TestEvents.Alert).ToList(),
    };

    [Theory]
    [MemberData(nameof(Tables))]
    public async Task Every_column_reads_back_as_the_same_rows_inserted_as_RowBinary(string tableName)
    {
        var table = EventTables.All.Single(t => t.Name == tableName);
        // Shuffled, so the block must be sorted before it is sent; batch ids vary too.
        var events = EventsFor(tableName, 700).OrderBy(e => (e.TimeUnixNano * 2654435761UL) % 1000003).ToList();
        var rowBinaryDb = ClickHouseServer.NewDatabase();
        var nativeDb = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(rowBinaryDb)).EnsureAsync();
        await new ClickHouseSchema(ch.Client, ch.Options(nativeDb)).EnsureAsync();

        var rows = new RowBinaryWriter();
        var block = new NativeBlock(table);
        for (var i = 0; i < events.Count; i++)
        {
            table.WriteRow(rows, events[i], (ulong)(i / 100 + 1));
            block.Append(events[i], (ulong)(i / 100 + 1));
        }

        block.SortsRows.Should().BeTrue();
        block.SortedOrder().Should().NotBeNull("the events were shuffled");
        var sortedBefore = await AlreadySortedBlocksAsync();
        await ch.Client.InsertRowBinaryAsync($"{rowBinaryDb}.{table.Name}", table.InsertColumnNames, rows.WrittenMemory);
        await ch.Client.InsertAsync($"{nativeDb}.{table.Name}", table.InsertColumnNames, "Native", block.EncodedLength(), block.WriteToAsync);
        (await AlreadySortedBlocksAsync() - sortedBefore).Should().Be(1, "the Native block arrives in the server's sort order, the RowBinary one does not");

        // Every column, FixedString and strings with NULs included, as the real client prints them.
        var select = $"SELECT * FROM {{0}}.{table.Name} ORDER BY time_ns, batch_id FORMAT TabSeparated";
        var native = await ch.RunClientAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, select, nativeDb));
        var rowBinary = await ch.RunClientAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, select, rowBinaryDb));
        native.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(events.Count);
        native.Should().Be(rowBinary);

        // And the relay's own reader gets the events back.
        var store = new ClickHouseEventStore(ch.Client, ch.Options(nativeDb));
        var read = await store.QueryAsync(new EventQuery(), table.Types, CancellationToken.None);
        read.Should().BeEquivalentTo(events);

        // A retry sends the same block again.
        await ch.Client.InsertAsync($"{nativeDb}.{table.Name}", table.InsertColumnNames, "Native", block.EncodedLength(), block.WriteToAsync);
        (await ch.RunClientAsync($"SELECT count() FROM {nativeDb}.{table.Name}")).Trim().Should().Be((2 * events.Count).ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    [Theory]
    [InlineData("Native", "false")]
    [InlineData("Native", "true")]
    [InlineData("RowBinary", "false")]
    public async Task The_writer_stores_every_event_type_in_either_format_with_or_without_gzip(string format, string compress)
    {
        var events = TestEvents.Mixed(300).Concat(Enumerable.Range(0, 50).Select(TestEvents.Alert)).ToList();
        await using var relay = await FlowStorageTests.StartAsync(ch.Server.Url, ClickHouseServer.NewDatabase(), batchMaxRows: 400,
            settings: new Dictionary<string, string?> { ["InsertFormat"] = format, ["CompressInserts"] = compress });
        foreach (var chunk in events.Chunk(128))
        {
            var batch = new EventBatch { Node = "n" };
            batch.Events.AddRange(chunk);
            await relay.Pipeline.PublishAsync(batch, CancellationToken.None);
        }

        await Eventually.HoldsAsync(() => relay.Writer.EventsStored == events.Count, Timeout,
            () => $"stored {relay.Writer.EventsStored}/{events.Count}, last error {relay.Writer.LastError}");
        relay.Writer.InsertErrors.Should().Be(0);
        var read = await relay.Store.QueryAsync(new EventQuery(), null, CancellationToken.None);
        read.Should().BeEquivalentTo(events);
    }

    // The server counts blocks it found already in sort order (MergeTreeDataWriterBlocksAlreadySorted).
    private async Task<long> AlreadySortedBlocksAsync()
    {
        var text = await ch.Client.QueryTextAsync("SELECT sum(value) FROM system.events WHERE event = 'MergeTreeDataWriterBlocksAlreadySorted'");
        return long.Parse(text.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task A_row_whose_writer_throws_half_way_leaves_no_trace()
    {
        var table = new EventTable("t", [EventType.Flow],
        [
            EventColumn.Of("time", "DateTime('UTC')", (w, e) => w.WriteUInt32((uint)(e.TimeUnixNano / 1_000_000_000)), (_, _) => { }),
            EventColumn.Of("node", "String", (w, e) => w.WriteString(e.Node), (_, _) => { }),
            EventColumn.Of("names", "Array(String)", (w, e) => EventColumns.WriteStrings(w, e.Destination?.Names ?? []), (_, _) => { }),
            EventColumn.Of("boom", "UInt8", (w, e) => w.WriteUInt8(e.Node == "boom" ? throw new InvalidOperationException("boom") : (byte)1), (_, _) => { }),
        ], EventColumns.Engine(), () => new Event());
        var good = TestFlows.Flows(2);
        var bad = TestFlows.Flow(5);
        bad.Node = "boom";

        var clean = new NativeBlock(table);
        var dirty = new NativeBlock(table);
        clean.Append(good[0], 1);
        clean.Append(good[1], 1);
        dirty.Append(good[0], 1);
        dirty.Invoking(b => b.Append(bad, 1)).Should().Throw<InvalidOperationException>();
        dirty.Append(good[1], 1);

        dirty.Rows.Should().Be(2);
        dirty.Bytes.Should().Be(clean.Bytes);
        dirty.EncodedLength().Should().Be(clean.EncodedLength());
        (await Encode(dirty)).Should().Equal(await Encode(clean));

        static async Task<byte[]> Encode(NativeBlock block)
        {
            using var stream = new MemoryStream();
            await block.WriteToAsync(stream, CancellationToken.None);
            stream.Length.Should().Be(block.EncodedLength());
            return stream.ToArray();
        }
    }

    [Theory]
    [InlineData(false)] // IPv4 only: the key's ranges in the block fit 128 bits, the packed sort
    [InlineData(true)] // IPv4 and IPv6: src_ip alone spans 128 bits, the word-by-word sort
    public void Rows_are_ordered_by_the_sort_key_whether_or_not_it_packs_into_128_bits(bool withIpv6)
    {
        // Three hours, shuffled; TestFlows makes every third flow IPv6.
        var events = Enumerable.Range(0, 3000).Where(i => withIpv6 || i % 3 != 0).Select(i =>
        {
            var e = TestFlows.Flow(i);
            e.TimeUnixNano += (ulong)(i % 4) * 3_600_000_000_000UL;
            return e;
        }).OrderBy(e => (e.TimeUnixNano * 2654435761UL) % 1000003).ToList();
        var block = new NativeBlock(FlowTable.Table);
        foreach (var e in events)
        {
            block.Append(e, 1);
        }

        // ORDER BY (toStartOfHour(time), src_namespace, src_pod, src_ip, dst_ip, time_ns), bytes compared as ClickHouse does, ties in arrival order.
        var bytes = Comparer<byte[]>.Create((x, y) => x.AsSpan().SequenceCompareTo(y));
        var expected = Enumerable.Range(0, events.Count)
            .OrderBy(i => events[i].TimeUnixNano / 3_600_000_000_000UL)
            .ThenBy(i => System.Text.Encoding.UTF8.GetBytes(events[i].Source.Namespace), bytes)
            .ThenBy(i => System.Text.Encoding.UTF8.GetBytes(events[i].Source.Pod), bytes)
            .ThenBy(i => Fixed16(events[i].Source.Ip.ToByteArray()), bytes)
            .ThenBy(i => Fixed16(events[i].Destination.Ip.ToByteArray()), bytes)
            .ThenBy(i => events[i].TimeUnixNano)
            .ThenBy(i => i);
        block.SortedOrder()!.Take(events.Count).Should().Equal(expected);

        static byte[] Fixed16(byte[] ip) => ip.Length == 4 ? [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, .. ip] : ip;
    }

    [Fact]
    public async Task A_shuffled_block_is_written_byte_for_byte_as_the_same_rows_appended_in_sort_order()
    {
        // String values of every length from 0 to 40 bytes (non-ASCII too), arrays of 0 to 3 such
        // items, enough rows that every column crosses the writer's 256 KiB chunks: the sorted write
        // gathers values one by one (short ones as one 16-byte copy), the in-order write copies each
        // column as it is.
        var random = new Random(7);
        string Text(int length) => new(Enumerable.Range(0, length).Select(_ => random.Next(8) == 0 ? 'é' : (char)('a' + random.Next(26))).ToArray());
        var events = Enumerable.Range(0, 40_000).Select(i =>
        {
            var e = TestFlows.Flow(i);
            e.Source.Pod = Text(random.Next(41));
            e.Destination.Process = Text(random.Next(41));
            e.Flow.State = Text(random.Next(3) == 0 ? 0 : random.Next(17));
            e.Node = Text(random.Next(20));
            e.Destination.Labels.Clear();
            for (var l = random.Next(4); l > 0; l--)
            {
                e.Destination.Labels[Text(1 + random.Next(12))] = Text(random.Next(30));
            }

            e.Source.Names.Add(Enumerable.Range(0, random.Next(4)).Select(_ => Text(random.Next(41))));
            return e;
        }).ToList();
        var shuffled = new NativeBlock(FlowTable.Table);
        foreach (var e in events)
        {
            shuffled.Append(e, (ulong)e.Destination.Port);
        }

        var order = shuffled.SortedOrder();
        order.Should().NotBeNull();
        var inOrder = new NativeBlock(FlowTable.Table);
        foreach (var row in order!.Take(events.Count))
        {
            inOrder.Append(events[row], (ulong)events[row].Destination.Port);
        }

        inOrder.SortedOrder().Should().BeNull("these rows were appended in sort order");
        using var gathered = new MemoryStream();
        using var copied = new MemoryStream();
        await shuffled.WriteToAsync(gathered, CancellationToken.None);
        await inOrder.WriteToAsync(copied, CancellationToken.None);
        gathered.Length.Should().Be(shuffled.EncodedLength());
        gathered.ToArray().AsSpan().SequenceEqual(copied.ToArray()).Should().BeTrue("the sorted write sends the same bytes as the rows in order");
    }

    [Theory]
    [MemberData(nameof(Tables))]
    public async Task Rows_taken_out_leave_the_block_a_block_of_the_other_rows_would_be(string tableName)
    {
        // Three sensor batches' rows, appended row by row and as decoded blocks; the middle one, then
        // the last, taken out (fixed-width, String and Array columns all move).
        var table = EventTables.All.Single(t => t.Name == tableName);
        var events = EventsFor(tableName, 30);
        var block = new NativeBlock(table);
        for (var i = 0; i < 10; i++)
        {
            block.Append(events[i], 1);
        }

        var decoded = new NativeBlock(table);
        for (var i = 10; i < 20; i++)
        {
            decoded.Append(events[i], 2);
        }

        block.AppendBlock(decoded);
        for (var i = 20; i < 30; i++)
        {
            block.Append(events[i], 3);
        }

        block.RemoveRows(10, 10);
        (await EncodeAsync(block)).Should().Equal(await EncodeAsync(Build(table, events, 0..10, 20..30)), "batch 2's rows are gone, batch 3's moved up");
        block.Bytes.Should().Be(Build(table, events, 0..10, 20..30).Bytes);

        block.RemoveRows(10, 10);
        (await EncodeAsync(block)).Should().Equal(await EncodeAsync(Build(table, events, 0..10)));
        block.Bytes.Should().Be(Build(table, events, 0..10).Bytes);
        block.Invoking(b => b.RemoveRows(5, 6)).Should().Throw<ArgumentOutOfRangeException>();

        // The block still takes rows after a removal, and the server reads them back.
        block.Append(events[25], 3);
        block.Rows.Should().Be(11);
        var db = ClickHouseServer.NewDatabase();
        await new ClickHouseSchema(ch.Client, ch.Options(db)).EnsureAsync();
        await ch.Client.InsertAsync($"{db}.{table.Name}", table.InsertColumnNames, "Native", block.EncodedLength(), block.WriteToAsync, CancellationToken.None);
        (await ch.RunClientAsync($"SELECT batch_id, count() FROM {db}.{table.Name} GROUP BY batch_id ORDER BY batch_id FORMAT TabSeparated"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal("1\t10", "3\t1");

        static NativeBlock Build(EventTable table, List<Event> events, params Range[] ranges)
        {
            var block = new NativeBlock(table);
            foreach (var range in ranges)
            {
                var (offset, length) = range.GetOffsetAndLength(events.Count);
                for (var i = offset; i < offset + length; i++)
                {
                    block.Append(events[i], i < 10 ? 1UL : i < 20 ? 2UL : 3UL);
                }
            }

            return block;
        }

        static async Task<byte[]> EncodeAsync(NativeBlock block)
        {
            using var stream = new MemoryStream();
            await block.WriteToAsync(stream, CancellationToken.None);
            stream.Length.Should().Be(block.EncodedLength());
            return stream.ToArray();
        }
    }

    [Fact]
    public void A_block_is_empty_again_after_clear_and_counts_what_it_holds()
    {
        var block = new NativeBlock(FlowTable.Table);
        foreach (var e in TestFlows.Flows(10))
        {
            block.Append(e, 1);
        }

        block.Rows.Should().Be(10);
        block.Bytes.Should().BeGreaterThan(10 * 200);
        block.Clear();
        block.Rows.Should().Be(0);
        block.Bytes.Should().Be(0);
        block.SortedOrder().Should().BeNull();
    }
}
