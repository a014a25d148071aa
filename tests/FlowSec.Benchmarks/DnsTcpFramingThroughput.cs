using System.Diagnostics;
using FlowSec.Sensor.Dns;

namespace FlowSec.Benchmarks;

/// <summary>
/// How many DNS-over-TCP messages one core reassembles per second with <see cref="DnsTcpFraming"/>
/// (framing only: the parser and tracker cost the same as for UDP). Three segmentations of the same
/// streams, many connections interleaved: one message per segment (the common case, delivered
/// without copying), messages cut at random points (1–700 bytes per segment, copied into the
/// stream's buffer), and eight messages per segment (pipelined queries).
/// </summary>
internal static class DnsTcpFramingThroughput
{
    private const int Connections = 1024;

    public static void Run(int messages)
    {
        // A 50-byte query and an 80-byte response, as a resolver's stub exchanges them.
        byte[] query = Message(50), response = Message(80);
        Console.WriteLine($"dns-tcp framing: {messages:N0} messages over {Connections} connections");
        Measure("one message per segment", messages, query, response, (stream, _) => Cut(stream, query.Length + 2, response.Length + 2));
        Measure("random cuts (1-700 bytes)", messages, query, response, (stream, random) => RandomCuts(stream, random));
        Measure("8 messages per segment", messages, query, response, (stream, _) => Cut(stream, 8 * (query.Length + 2), 8 * (response.Length + 2)));
    }

    private static void Measure(string name, int messages, byte[] query, byte[] response, Func<byte[], Random, List<(int Start, int Length)>> segment)
    {
        var random = new Random(1);
        int perConnection = Math.Max(1, messages / Connections);
        // Each connection's stream alternates query and response lengths (one direction, for simplicity).
        byte[] stream = DnsTcpFraming.Frame(Enumerable.Range(0, perConnection).Select(i => i % 2 == 0 ? query : response));
        var cuts = segment(stream, random);
        var framing = new DnsTcpFraming(maxStreams: Connections, maxMessageBytes: 4096);
        long delivered = 0;
        DnsTcpMessageHandler onMessage = (m, _) => delivered++;
        // Warm-up on other sockets, then measure with connections interleaved segment by segment.
        Pass(framing, stream, cuts, onMessage, cookieBase: 1UL << 40, connections: 16);
        delivered = 0;
        var before = GC.GetTotalAllocatedBytes(precise: true);
        var watch = Stopwatch.StartNew();
        Pass(framing, stream, cuts, onMessage, cookieBase: 0, connections: Connections);
        watch.Stop();
        var allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Console.WriteLine($"  {name,-28} {delivered / watch.Elapsed.TotalSeconds / 1e6:0.00} M messages/s, {1e9 * watch.Elapsed.TotalSeconds / delivered:0} ns/message, " +
            $"{cuts.Count * Connections / watch.Elapsed.TotalSeconds / 1e6:0.00} M segments/s, {allocated / (double)delivered:0} bytes allocated/message, skipped {framing.ContinuationsSkipped}");
    }

    private static void Pass(DnsTcpFraming framing, byte[] stream, List<(int Start, int Length)> cuts, DnsTcpMessageHandler onMessage, ulong cookieBase, int connections)
    {
        foreach (var (start, length) in cuts)
        {
            for (int c = 0; c < connections; c++)
            {
                framing.OnSegment(cookieBase + (ulong)c, false, (uint)start, length, stream.AsSpan(start, length), onMessage);
            }
        }
    }

    private static List<(int, int)> Cut(byte[] stream, int first, int second)
    {
        var cuts = new List<(int, int)>();
        for (int at = 0, i = 0; at < stream.Length; i++)
        {
            int length = Math.Min(stream.Length - at, i % 2 == 0 ? first : second);
            cuts.Add((at, length));
            at += length;
        }
        return cuts;
    }

    private static List<(int, int)> RandomCuts(byte[] stream, Random random)
    {
        var cuts = new List<(int, int)>();
        for (int at = 0; at < stream.Length;)
        {
            int length = Math.Min(stream.Length - at, random.Next(1, 701));
            cuts.Add((at, length));
            at += length;
        }
        return cuts;
    }

    private static byte[] Message(int length)
    {
        var m = new byte[length];
        new Random(length).NextBytes(m);
        return m;
    }
}
