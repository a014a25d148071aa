using System.Diagnostics;
using System.Security.Cryptography;
using FlowSec.Api.V1;
using FlowSec.Relay.Ingest;
using FlowSec.Relay.Storage;
using Google.Protobuf;

namespace FlowSec.Benchmarks;

/// <summary>
/// The relay's client-side cost of a Native insert of flows, per phase: ingest (batch bytes to rows,
/// <see cref="EventBatchDecoder"/> against parsing into objects), <see cref="NativeBlock.Append"/>
/// of every row, <see cref="NativeBlock.SortedOrder"/> alone, and <see cref="NativeBlock.WriteToAsync"/> into a
/// null stream (which sorts again, so a block costs append + write). No ClickHouse involved.
/// </summary>
internal static class EncodeCost
{
    /// <summary>Encodes blocks of <paramref name="rows"/> flows <paramref name="rounds"/> times and prints µs/row per phase (best round) and bytes allocated per row.</summary>
    public static async Task RunAsync(int rows, int rounds)
    {
        // QueryBenchmark's realistic flows (2,000 pods, Zipf talkers, in time order), round-tripped
        // through protobuf so every event's strings are their own instances, as the relay gets them.
        var random = new Random(rows);
        var events = Enumerable.Range(0, rows).Select(i => Event.Parser.ParseFrom(QueryBenchmark.Flow(i, rows, random).ToByteArray())).ToArray();
        var block = new NativeBlock(FlowTable.Table);
        Console.WriteLine($"encode: {rows:N0} flows per block, {rounds} rounds, {Environment.ProcessorCount} cores, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");

        // The block's bytes, to show an encoding change sends the same bytes.
        var hash = new HashingStream();
        foreach (var e in events)
        {
            block.Append(e, 1);
        }

        await block.WriteToAsync(hash, CancellationToken.None);
        Console.WriteLine($"  block: {block.EncodedLength():N0} bytes, SHA-256 {Convert.ToHexString(hash.Hash())[..16]}");
        block.Clear();

        var best = (Append: double.MaxValue, Sort: double.MaxValue, Write: double.MaxValue);
        var allocated = (Append: long.MaxValue, Sort: long.MaxValue, Write: long.MaxValue);
        for (var round = 0; round < rounds; round++)
        {
            var bytes = GC.GetAllocatedBytesForCurrentThread();
            var watch = Stopwatch.StartNew();
            foreach (var e in events)
            {
                block.Append(e, 1);
            }

            var append = watch.Elapsed.TotalMicroseconds;
            var afterAppend = GC.GetAllocatedBytesForCurrentThread();
            watch.Restart();
            block.SortedOrder();
            var sort = watch.Elapsed.TotalMicroseconds;
            var afterSort = GC.GetAllocatedBytesForCurrentThread();
            watch.Restart();
            await block.WriteToAsync(Stream.Null, CancellationToken.None);
            var write = watch.Elapsed.TotalMicroseconds;
            var afterWrite = GC.GetAllocatedBytesForCurrentThread();
            block.Clear();

            best = (Math.Min(best.Append, append / rows), Math.Min(best.Sort, sort / rows), Math.Min(best.Write, write / rows));
            allocated = (Math.Min(allocated.Append, afterAppend - bytes), Math.Min(allocated.Sort, afterSort - afterAppend),
                Math.Min(allocated.Write, afterWrite - afterSort));
        }

        await IngestDecodeAsync(events, rows, rounds);

        Console.WriteLine("  phase            µs/row (best round)   bytes allocated/row");
        Console.WriteLine($"  append           {best.Append,8:0.000}              {(double)allocated.Append / rows,8:0.0}");
        Console.WriteLine($"  sort             {best.Sort,8:0.000}              {(double)allocated.Sort / rows,8:0.0}");
        Console.WriteLine($"  write (+ sort)   {best.Write,8:0.000}              {(double)allocated.Write / rows,8:0.0}");
        Console.WriteLine($"  append + write   {best.Append + best.Write,8:0.000}");

        // Where append's time goes: each column's writer alone (best of 3), costliest first. Over 1,000
        // events that stay in cache, as in append (which writes every column of an event in turn):
        // over all of them, each column would pay the cache misses of reading every event again.
        var hot = events.Take(1000).ToArray();
        var writer = new RowBinaryWriter(64 << 20);
        var columns = new List<(string Name, double Ns, double Bytes)>();
        foreach (var column in FlowTable.Table.Columns)
        {
            var (ns, alloc) = (double.MaxValue, double.MaxValue);
            for (var round = 0; round < 3; round++)
            {
                writer.Clear();
                var bytes = GC.GetAllocatedBytesForCurrentThread();
                var watch = Stopwatch.StartNew();
                for (var i = 0; i < rows; i++)
                {
                    column.Write(writer, hot[i % hot.Length]);
                }

                ns = Math.Min(ns, watch.Elapsed.TotalNanoseconds / rows);
                alloc = Math.Min(alloc, (double)(GC.GetAllocatedBytesForCurrentThread() - bytes) / rows);
            }

            columns.Add((column.Name, ns, alloc));
        }

        var hotAppend = double.MaxValue;
        for (var round = 0; round < 3; round++)
        {
            block.Clear();
            var watch = Stopwatch.StartNew();
            for (var i = 0; i < rows; i++)
            {
                block.Append(hot[i % hot.Length], 1);
            }

            hotAppend = Math.Min(hotAppend, watch.Elapsed.TotalMicroseconds / rows);
        }

        block.Clear();
        var rowBinary = double.MaxValue;
        var single = new RowBinaryWriter(64 << 20);
        for (var round = 0; round < 3; round++)
        {
            single.Clear();
            var watch = Stopwatch.StartNew();
            for (var i = 0; i < rows; i++)
            {
                FlowTable.Table.WriteRow(single, hot[i % hot.Length]);
            }

            rowBinary = Math.Min(rowBinary, watch.Elapsed.TotalMicroseconds / rows);
        }

        Console.WriteLine($"  1,000 events in cache, repeated: append {hotAppend:0.000} µs/row, the same as RowBinary rows into one buffer {rowBinary:0.000}");
        Console.WriteLine($"  column writers alone: {columns.Sum(c => c.Ns) / 1000:0.000} µs/row in all; costliest (ns/row, bytes allocated/row):");
        foreach (var (name, ns, alloc) in columns.OrderByDescending(c => c.Ns).Take(12))
        {
            Console.WriteLine($"    {name,-20} {ns,6:0.0} {alloc,6:0.0}");
        }
    }

    /// <summary>
    /// The relay's work from a received batch's bytes to rows in the writer's block, both ways: parsing
    /// <c>EventBatch</c> into objects and appending each event through the column writers (before), and
    /// <see cref="EventBatchDecoder"/> decoding flows into a per-batch block that is then copied into the
    /// writer's block (after). Sensor-sized batches of 4,096 flows; the blocks' SHA-256 must match.
    /// </summary>
    private static async Task IngestDecodeAsync(Event[] events, int rows, int rounds)
    {
        var batches = events.Chunk(4096).Select((chunk, i) =>
        {
            var batch = new EventBatch { Node = "node-1", BatchId = (ulong)i + 1 };
            batch.Events.AddRange(chunk);
            return batch.ToByteArray();
        }).ToArray();
        var decoder = new EventBatchDecoder(decodeFlows: true);
        var block = new NativeBlock(FlowTable.Table);
        var best = (Objects: double.MaxValue, Decoded: double.MaxValue);
        var allocated = (Objects: long.MaxValue, Decoded: long.MaxValue);
        var hashes = (Objects: "", Decoded: "");
        for (var round = 0; round < rounds; round++)
        {
            var bytes = GC.GetAllocatedBytesForCurrentThread();
            var watch = Stopwatch.StartNew();
            foreach (var message in batches)
            {
                var batch = EventBatch.Parser.ParseFrom(message);
                foreach (var e in batch.Events)
                {
                    e.Node = batch.Node;
                    block.Append(e, batch.BatchId);
                }
            }

            best.Objects = Math.Min(best.Objects, watch.Elapsed.TotalMicroseconds / rows);
            allocated.Objects = Math.Min(allocated.Objects, GC.GetAllocatedBytesForCurrentThread() - bytes);
            hashes.Objects = await HashAsync(block);
            block.Clear();

            bytes = GC.GetAllocatedBytesForCurrentThread();
            watch.Restart();
            foreach (var message in batches)
            {
                var received = decoder.Decode(message, liveEvents: false);
                block.AppendBlock(received.Rows!);
                NativeBlockPool.Return(received.Rows!);
            }

            best.Decoded = Math.Min(best.Decoded, watch.Elapsed.TotalMicroseconds / rows);
            allocated.Decoded = Math.Min(allocated.Decoded, GC.GetAllocatedBytesForCurrentThread() - bytes);
            hashes.Decoded = await HashAsync(block);
            block.Clear();
        }

        Console.WriteLine($"  ingest, batch bytes to rows in the writer's block (best round, µs/row; bytes allocated/row):");
        Console.WriteLine($"    parse into objects + append     {best.Objects,8:0.000}   {(double)allocated.Objects / rows,8:0.0}   block SHA-256 {hashes.Objects}");
        Console.WriteLine($"    decode into columns + copy      {best.Decoded,8:0.000}   {(double)allocated.Decoded / rows,8:0.0}   block SHA-256 {hashes.Decoded}");
        if (hashes.Objects != hashes.Decoded || decoder.BatchesHandedToProtobuf != 0)
        {
            throw new InvalidOperationException("the decoded rows differ from the object path's (or the decoder handed batches to Google.Protobuf)");
        }

        static async Task<string> HashAsync(NativeBlock block)
        {
            using var hash = new HashingStream();
            await block.WriteToAsync(hash, CancellationToken.None);
            return Convert.ToHexString(hash.Hash())[..16];
        }
    }

    /// <summary>A write-only stream that hashes what it is given.</summary>
    private sealed class HashingStream : Stream
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

        public byte[] Hash() => _hash.GetHashAndReset();

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count) => _hash.AppendData(buffer, offset, count);

        public override void Write(ReadOnlySpan<byte> buffer) => _hash.AppendData(buffer);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            _hash.AppendData(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            _hash.Dispose();
            base.Dispose(disposing);
        }
    }
}
