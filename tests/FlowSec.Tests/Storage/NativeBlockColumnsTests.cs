using FlowSec.Api.V1;
using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>
/// Rows appended a column at a time (<see cref="NativeBlock.AppendColumns{TSource}"/>, what ingest
/// does with decoded flows) make the block the same rows appended one by one would, and a run that
/// fails in any column, or gets too few or too many values, leaves the block as it was.
/// </summary>
public sealed class NativeBlockColumnsTests
{
    // One column of each kind the column path writes: fixed-width of two widths, String.
    private static readonly EventTable Table = new("t", [EventType.Flow],
    [
        EventColumn.Of("time", "DateTime('UTC')", (w, e) => w.WriteUInt32((uint)(e.TimeUnixNano / 1_000_000_000)), (_, _) => { }),
        EventColumn.Of("node", "String", (w, e) => w.WriteString(e.Node), (_, _) => { }),
        EventColumn.Of("bytes", "UInt64", (w, e) => w.WriteUInt64(e.Flow.BytesSent), (_, _) => { }),
        EventColumn.Of("pod", "String", (w, e) => w.WriteString(e.Source.Pod), (_, _) => { }),
    ], EventColumns.Engine(), () => new Event());

    public static TheoryData<string> Failures => new()
    {
        "throws in the third column",
        "a String column one value short",
        "a String column one value too many",
        "a fixed-width column as another width",
        "a fixed-width column not reserved",
    };

    [Fact]
    public async Task Runs_appended_column_by_column_make_the_block_row_by_row_appends_make()
    {
        var events = Events(700);
        var byRow = new NativeBlock(Table, sortRows: false);
        var byColumn = new NativeBlock(Table, sortRows: false);
        foreach (var e in events)
        {
            byRow.Append(e, 7);
        }

        // Runs of several sizes, the empty run included, after rows appended one by one.
        byColumn.Append(events[0], 7);
        var at = 1;
        foreach (var run in new[] { 0, 1, 255, 256, 187 })
        {
            var source = new Source(events.AsSpan(at, run));
            byColumn.AppendColumns(ref source, run, 7);
            at += run;
        }

        at.Should().Be(events.Length);
        byColumn.Rows.Should().Be(byRow.Rows);
        byColumn.Bytes.Should().Be(byRow.Bytes);
        (await Encode(byColumn)).Should().Equal(await Encode(byRow));
    }

    [Theory]
    [MemberData(nameof(Failures))]
    public async Task A_run_that_fails_in_any_column_leaves_the_block_as_it_was(string failure)
    {
        var events = Events(20);
        var clean = new NativeBlock(Table, sortRows: false);
        var dirty = new NativeBlock(Table, sortRows: false);
        foreach (var e in events)
        {
            clean.Append(e, 1);
        }

        var first = new Source(events.AsSpan(0, 10));
        dirty.AppendColumns(ref first, 10, 1);
        var bad = new Source(events.AsSpan(10, 10), failure);
        var thrown = false;
        try
        {
            dirty.AppendColumns(ref bad, 10, 1);
        }
        catch (Exception e) when (e is InvalidOperationException or IndexOutOfRangeException)
        {
            thrown = true;
        }

        thrown.Should().BeTrue(failure);
        dirty.Rows.Should().Be(10, failure);
        var good = new Source(events.AsSpan(10, 10));
        dirty.AppendColumns(ref good, 10, 1);

        dirty.Rows.Should().Be(20);
        dirty.Bytes.Should().Be(clean.Bytes, failure);
        (await Encode(dirty)).Should().Equal(await Encode(clean), failure);
    }

    [Fact]
    public void A_table_with_an_array_column_is_refused_and_the_block_keeps_its_rows()
    {
        var table = new EventTable("a", [EventType.Flow],
        [
            EventColumn.Of("time", "DateTime('UTC')", (w, e) => w.WriteUInt32(1), (_, _) => { }),
            EventColumn.Of("names", "Array(String)", (w, e) => EventColumns.WriteStrings(w, e.Destination?.Names ?? []), (_, _) => { }),
        ], EventColumns.Engine(), () => new Event());
        var block = new NativeBlock(table, sortRows: false);
        var one = new NativeBlock(table, sortRows: false);
        block.Append(TestFlows.Flow(1), 1);
        one.Append(TestFlows.Flow(1), 1);
        var source = new Source(Events(3).AsSpan());

        var refused = false;
        try
        {
            block.AppendColumns(ref source, 3, 1);
        }
        catch (NotSupportedException)
        {
            refused = true;
        }

        refused.Should().BeTrue();
        block.Rows.Should().Be(1);
        block.Bytes.Should().Be(one.Bytes);
        block.EncodedLength().Should().Be(one.EncodedLength());
    }

    private static Event[] Events(int count) => TestFlows.Flows(count).Select((e, i) =>
    {
        e.Node = i % 3 == 0 ? "node-é" : new string('n', i % 200); // lengths past one VarUInt byte too
        return e;
    }).ToArray();

    private static async Task<byte[]> Encode(NativeBlock block)
    {
        using var stream = new MemoryStream();
        await block.WriteToAsync(stream, CancellationToken.None);
        stream.Length.Should().Be(block.EncodedLength());
        return stream.ToArray();
    }

    /// <summary>The run's events as <see cref="Table"/>'s columns, or with one of <see cref="Failures"/>.</summary>
    private readonly ref struct Source(ReadOnlySpan<Event> events, string? failure = null) : IColumnSource
    {
        private readonly ReadOnlySpan<Event> _events = events;

        public void WriteColumn(int column, ref NativeBlock.ColumnValues values)
        {
            switch (column, failure)
            {
                case (2, "throws in the third column"):
                    throw new InvalidOperationException("boom");
                case (0, "a fixed-width column as another width"):
                    values.Fixed<ulong>();
                    return;
                case (2, "a fixed-width column not reserved"):
                    return;
            }

            var count = (column, failure) switch
            {
                (3, "a String column one value short") => _events.Length - 1,
                (1, "a String column one value too many") => _events.Length + 1,
                _ => _events.Length,
            };
            switch (column)
            {
                case 0:
                    var times = values.Fixed<uint>();
                    for (var r = 0; r < count; r++)
                    {
                        times[r] = (uint)(_events[r].TimeUnixNano / 1_000_000_000);
                    }

                    break;
                case 1:
                    for (var r = 0; r < count; r++)
                    {
                        values.String(System.Text.Encoding.UTF8.GetBytes(_events[r % _events.Length].Node));
                    }

                    break;
                case 2:
                    var bytes = values.Fixed<ulong>();
                    for (var r = 0; r < count; r++)
                    {
                        bytes[r] = _events[r].Flow.BytesSent;
                    }

                    break;
                default:
                    // As the decoder writes strings: where each lies in one buffer (the last ones
                    // closer than 16 bytes to its end, which a short value's 16-byte copy must not read past).
                    var pods = new List<byte>();
                    var starts = new List<int>();
                    for (var r = 0; r < _events.Length; r++)
                    {
                        starts.Add(pods.Count);
                        pods.AddRange(System.Text.Encoding.UTF8.GetBytes(_events[r].Source.Pod));
                    }

                    starts.Add(pods.Count);
                    var buffer = pods.ToArray();
                    for (var r = 0; r < count; r++)
                    {
                        values.String(buffer, starts[r], starts[r + 1] - starts[r]);
                    }

                    break;
            }
        }
    }
}
