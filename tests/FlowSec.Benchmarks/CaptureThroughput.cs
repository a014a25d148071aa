using System.Diagnostics;
using System.Runtime.InteropServices;
using Google.Protobuf;
using FlowSec.Api.V1;
using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using FlowSec.Sensor.Flows;

namespace FlowSec.Benchmarks;

/// <summary>
/// How many kernel records one core decodes, assembles into flows and attributes per second:
/// the sensor's user-space cost per event, without the kernel (which is measured by the
/// overhead benchmark). Records are built in the exact kernel layout, one close record per socket.
/// </summary>
internal static class CaptureThroughput
{
    public static void Run(int connections)
    {
        var records = BuildRecords(connections);
        var root = CgroupResolver.DefaultRoot;
        // With the DNS name cache, as the sensor runs: every endpoint is looked up in it.
        var enricher = new EndpointEnricher(new CgroupResolver(root), [],
            new FlowSec.Sensor.Dns.DnsNameCache(65_536, TimeSpan.FromMinutes(5), TimeSpan.FromHours(1)));
        // Warm up JIT and tables, then measure.
        Pass(records, enricher, Math.Min(records.Length, 20_000));
        var before = GC.GetTotalAllocatedBytes(precise: true);
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var watch = Stopwatch.StartNew();
        var flows = Pass(records, enricher, records.Length);
        watch.Stop();
        var cpuUsed = Process.GetCurrentProcess().TotalProcessorTime - cpu;
        var allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        var perSecond = records.Length / watch.Elapsed.TotalSeconds;
        Console.WriteLine($"capture: {records.Length:N0} kernel records ({connections:N0} connections) → {flows:N0} flows");
        Console.WriteLine($"  decode+assemble+attribute: {perSecond / 1e6:0.00} M records/s wall, {records.Length / cpuUsed.TotalSeconds / 1e6:0.00} M records/s per CPU-second");
        Console.WriteLine($"  {1e9 / perSecond:0} ns per record; {allocated / (double)records.Length:0} bytes allocated per record");
        Console.WriteLine($"  CPU needed at 100k records/s: {100_000 / (records.Length / cpuUsed.TotalSeconds) * 100:0.0} % of a core");
        SteadyState(records, enricher);
        Encode(records, enricher);
    }

    /// <summary>
    /// The TCP capture thread's own loop, as the sensor runs it (TcpCapture.OnSample →
    /// SensorEventQueue.TryEnqueue): decode, assemble into the handed-back event, enrich, encode
    /// into the bytes the queue holds, hand the event back. Its allocations per record are the
    /// steady state's (the pass above builds a new event per record, as tests of one capture do).
    /// </summary>
    private static void SteadyState(byte[][] records, EndpointEnricher enricher)
    {
        var assembler = new FlowAssembler("bench", 0, TimeSpan.FromSeconds(10));
        long encodedBytes = 0;
        void Loop(int count)
        {
            for (var i = 0; i < count; i++)
            {
                TcpRecordDecoder.TryDecode(records[i], out var record);
                var e = assembler.Closed(record);
                enricher.TryEnrich(e);
                encodedBytes += EventBatchBytes.Encode(e).Length;
                assembler.Reuse(e);
            }
        }
        Loop(Math.Min(records.Length, 20_000));
        encodedBytes = 0;
        var before = GC.GetAllocatedBytesForCurrentThread();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        Loop(records.Length);
        var cpuUsed = Process.GetCurrentProcess().TotalProcessorTime - cpu;
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Console.WriteLine($"  steady state (decode, assemble into the reused event, enrich, encode, as the TCP thread): {cpuUsed.TotalNanoseconds / records.Length:0} ns CPU per record; "
            + $"{allocated / (double)records.Length:0} bytes allocated per record, of which {encodedBytes / (double)records.Length:0} B are the encoded event the queue holds (+ its array header)");
    }

    private static EventBatchBytes ExporterBytes(EventBatch batch)
    {
        var bytes = new EventBatchBytes { Node = batch.Node, BatchId = batch.BatchId };
        foreach (var e in batch.Events)
        {
            bytes.Add(e);
        }

        return bytes;
    }

    /// <summary>
    /// The exporter's next step for the same flows: one batch of 4096 (BatchMaxEvents) to protobuf
    /// bytes, with the generated code and as the exporter does it, event by event into
    /// <see cref="EventBatchBytes"/> (sizes each message once); same bytes, checked.
    /// </summary>
    private static void Encode(byte[][] records, EndpointEnricher enricher)
    {
        var batch = new EventBatch { Node = "bench", BatchId = 1 };
        var assembler = new FlowAssembler("bench", 0, TimeSpan.FromSeconds(10));
        for (var i = 0; i < records.Length && batch.Events.Count < 4096; i++)
        {
            TcpRecordDecoder.TryDecode(records[i], out var record);
            batch.Events.Add(assembler.Closed(record));
        }
        enricher.Enrich(batch.Events);
        if (!ExporterBytes(batch).ToByteArray().AsSpan().SequenceEqual(batch.ToByteArray()))
        {
            throw new InvalidOperationException("EventBatchBytes wrote other bytes than the generated code");
        }
        var buffer = new byte[batch.CalculateSize()];
        // EventBatchBytes encodes as events are added, so its rounds include adding them.
        foreach (var (name, build) in new (string, Func<IMessage>)[] { ("generated code", () => batch), ("EventBatchBytes", () => ExporterBytes(batch)) })
        {
            const int rounds = 200;
            var watch = new Stopwatch();
            for (var r = 0; r < rounds * 2; r++)
            {
                // The first half warms the JIT up; as GrpcFraming does: size, then write.
                watch.Start();
                var message = build();
                var size = message.CalculateSize();
                MessageExtensions.WriteTo(message, buffer.AsSpan(0, size));
                (message as EventBatchBytes)?.Release(); // its segments go back to the pool, as on an ack
                watch.Stop();
                if (r == rounds - 1)
                {
                    watch.Reset();
                }
            }
            Console.WriteLine($"  protobuf encoding ({name}): {watch.Elapsed.TotalNanoseconds / rounds / batch.Events.Count:0} ns per flow");
        }
        // What the overhead benchmark's relay sink spends reading them: a full parse, or the scan it uses.
        var bytes = batch.ToByteArray();
        foreach (var (name, parser) in new (string, MessageParser)[] { ("full parse", EventBatch.Parser), ("CountedBatch scan", CountedBatch.Parser) })
        {
            const int rounds = 200;
            var watch = new Stopwatch();
            for (var r = 0; r < rounds * 2; r++)
            {
                watch.Start();
                parser.ParseFrom(bytes);
                watch.Stop();
                if (r == rounds - 1)
                {
                    watch.Reset();
                }
            }
            Console.WriteLine($"  overhead sink reading ({name}): {watch.Elapsed.TotalNanoseconds / rounds / batch.Events.Count:0} ns per flow");
        }
    }

    private static long Pass(byte[][] records, EndpointEnricher enricher, int count)
    {
        var assembler = new FlowAssembler("bench", 0, TimeSpan.FromSeconds(10));
        var batch = new List<Event>(4096);
        long flows = 0;
        for (var i = 0; i < count; i++)
        {
            if (TcpRecordDecoder.TryDecode(records[i], out var record) != DecodeResult.Ok)
            {
                throw new InvalidOperationException("bench record did not decode");
            }
            batch.Add(assembler.Closed(record));
            if (batch.Count == batch.Capacity)
            {
                enricher.Enrich(batch);
                flows += batch.Count;
                batch.Clear();
            }
        }
        enricher.Enrich(batch);
        return flows + batch.Count;
    }

    private static unsafe byte[][] BuildRecords(int connections)
    {
        // One close record per socket, as the kernel sends them.
        var result = new List<byte[]>(connections);
        for (var c = 0; c < connections; c++)
        {
            var raw = new FsTcpRecord
            {
                kind = 2,
                tgid = 1000 + (uint)(c % 50),
                pid = 1000 + (uint)(c % 50),
                family = 2,
                old_state = 9,
                new_state = 7,
                timestamp_ns = (ulong)(c * 1000 + 500),
                start_ns = (ulong)(c * 1000),
                cgroup_id = 1,
                sock_id = 0xffff_8880_0000_0000 + (ulong)c * 4096,
                sport = (ushort)(32768 + c % 28000),
                dport = 8080,
                initiator = 1,
                first_state = 2,
                bytes_acked = 100,
                bytes_received = 1000,
                segs_out = 5,
                segs_in = 6,
                srtt_us = 40,
            };
            raw.saddr[0] = 10; raw.saddr[1] = 1; raw.saddr[2] = (byte)(c >> 8); raw.saddr[3] = (byte)c;
            raw.daddr[0] = 10; raw.daddr[1] = 2; raw.daddr[3] = 1;
            "curl"u8.CopyTo(new Span<byte>(raw.comm, FsTcpRecord.CommLength));
            var bytes = new byte[Marshal.SizeOf<FsTcpRecord>()];
            MemoryMarshal.Write(bytes, in raw);
            result.Add(bytes);
        }
        return [.. result];
    }
}
