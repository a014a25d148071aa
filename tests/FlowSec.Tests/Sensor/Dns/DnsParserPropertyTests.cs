using System.Diagnostics;
using System.Globalization;
using System.Net;
using FlowSec.Sensor.Dns;
using FsCheck;
using FsCheck.Fluent;
using Xunit.Abstractions;

namespace FlowSec.Tests.Sensor.Dns;

/// <summary>
/// Hundreds of thousands of random and mutated messages through the parser: it must never throw,
/// always return a consistent result with safe strings, and read well-formed messages exactly.
/// Time is measured and printed, never asserted.
/// </summary>
public class DnsParserPropertyTests(ITestOutputHelper output)
{
    private const int RandomCases = 100_000;
    private const int MutatedCases = 250_000;
    private const int RoundTripCases = 30_000;

    private static readonly byte[][] Corpus = BuildCorpus();

    [Fact]
    public void Random_bytes_never_break_the_parser()
    {
        // Half pure noise, half a plausible header (small counts) followed by noise.
        var noise = Gen.Choose(0, 600).SelectMany(n => Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), n));
        var headed =
            from body in noise
            from id in Gen.Choose(0, 0xffff)
            from an in Gen.Choose(0, 4)
            select new DnsPacketBuilder((ushort)id, 0x8180, 1, an).Build().Concat(body).ToArray();
        Run("random", Gen.OneOf(noise, headed), RandomCases);
    }

    [Fact]
    public void Mutated_real_and_built_messages_never_break_the_parser()
    {
        // The case is (message, seed, mutation count); the seed makes every failure replayable.
        var cases =
            from index in Gen.Choose(0, Corpus.Length - 1)
            from seed in Gen.Choose(int.MinValue, int.MaxValue)
            from mutations in Gen.Choose(1, 8)
            select Mutate(Corpus[index], new Random(seed), mutations);
        Run("mutated", cases, MutatedCases);
    }

    [Fact]
    public void Well_formed_messages_round_trip()
    {
        int compressed = 0;
        var prop = Prop.ForAll(Gen.Choose(int.MinValue, int.MaxValue).ToArbitrary(), seed =>
        {
            var model = Model.Generate(new Random(seed));
            compressed += model.Compress ? 1 : 0;
            byte[] message = model.Encode();

            var m = DnsParser.Parse(message);

            m.Malformed.Should().Be(DnsMalformation.None, $"seed {seed}: {Convert.ToHexString(message)}");
            m.Header.Id.Should().Be(model.Id);
            m.Header.Flags.Should().Be(model.Flags);
            m.Header.AnswerCount.Should().Be((ushort)model.Answers.Count);
            m.QuestionName.Should().Be(Present(model.Question));
            m.QuestionType.Should().Be(model.QuestionType);
            m.Answers.Select(a => (a.Name, a.Type, a.Ttl, a.Data)).Should().Equal(
                model.Answers.Select(a => (Present(a.Owner), a.Type, a.Ttl, a.ExpectedData)), $"seed {seed}");
        });
        var watch = Stopwatch.StartNew();
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(RoundTripCases), prop);
        output.WriteLine($"round-trip: {RoundTripCases} well-formed messages ({compressed} compressed) in {watch.ElapsedMilliseconds} ms");
    }

    [Fact]
    public void Parser_throughput_on_one_core_is_measured()
    {
        // Real dnsmasq/dig messages; a single thread, so this is one core's rate. Printed, not asserted.
        var packets = DnsParserTests.Real.All.ToArray();
        const int warmup = 50_000, rounds = 1_000_000;
        long answers = 0;
        for (int i = 0; i < warmup; i++)
        {
            answers += DnsParser.Parse(packets[i % packets.Length]).Answers.Count;
        }
        long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < rounds; i++)
        {
            answers += DnsParser.Parse(packets[i % packets.Length]).Answers.Count;
        }
        watch.Stop();
        long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
        double perSecond = rounds / watch.Elapsed.TotalSeconds;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"parser: {rounds} real messages (avg {packets.Average(p => p.Length):F0} B) in {watch.ElapsedMilliseconds} ms = {perSecond:N0} msg/s, {watch.Elapsed.TotalNanoseconds / rounds:F0} ns/msg, {allocated / rounds} B allocated/msg"));

        var watchHeader = Stopwatch.StartNew();
        for (int i = 0; i < rounds; i++)
        {
            answers += DnsParser.TryReadHeader(packets[i % packets.Length], out var h) ? h.AnswerCount : 0;
        }
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"header only: {rounds / watchHeader.Elapsed.TotalSeconds:N0} msg/s"));
        answers.Should().BeGreaterThan(0);
    }

    [Fact]
    public void Decode_and_match_throughput_is_measured()
    {
        // Kernel records → decoder → tracker → events, as the drain thread runs them (no kernel, no queue).
        const int lookups = 300_000;
        var query = DnsRecordDecoderTests.Record(2, 1, "10.0.0.7", "10.0.0.53", 40000, 53, DnsParserTests.Real.QueryWebA,
            DnsParserTests.Real.QueryWebA.Length, tgid: 42, comm: "dig");
        var response = DnsRecordDecoderTests.Record(2, 0, "10.0.0.53", "10.0.0.7", 53, 40000, DnsParserTests.Real.ResponseWebA,
            DnsParserTests.Real.ResponseWebA.Length, tgid: 42, comm: "dig");
        long events = 0;
        var names = new DnsNameCache(1000, TimeSpan.FromMinutes(5), TimeSpan.FromHours(1));
        var tracker = new DnsTransactionTracker("bench", TimeSpan.FromSeconds(5), 65_536, _ => events++, names);
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < lookups; i++)
        {
            // A new client port per lookup, as resolvers randomise it; ids repeat, ports make them distinct.
            ushort port = (ushort)(1024 + i % 60000);
            BitConverter.TryWriteBytes(query.AsSpan(72), port); // sport
            BitConverter.TryWriteBytes(response.AsSpan(74), port); // dport
            long ts = 1_000_000_000L + i * 1000L;
            BitConverter.TryWriteBytes(query.AsSpan(16), ts);
            BitConverter.TryWriteBytes(response.AsSpan(16), ts + 500);
            FlowSec.Sensor.Capture.DnsRecordDecoder.TryDecode(query, out var q, out var qm);
            tracker.Observe(q, qm);
            FlowSec.Sensor.Capture.DnsRecordDecoder.TryDecode(response, out var r, out var rm);
            tracker.Observe(r, rm);
            if (i % 1000 == 0)
            {
                tracker.Tick(ts);
            }
        }
        watch.Stop();
        events.Should().Be(lookups);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"decode+match: {lookups} lookups (2 records each) in {watch.ElapsedMilliseconds} ms = {lookups / watch.Elapsed.TotalSeconds:N0} lookups/s, {2 * lookups / watch.Elapsed.TotalSeconds:N0} records/s"));
    }

    private void Run(string name, Gen<byte[]> messages, int count)
    {
        long parsed = 0, malformed = 0, bytes = 0, slowestTicks = 0, parseTicks = 0;
        byte[] slowest = [];
        var reasons = new Dictionary<DnsMalformation, int>();
        var prop = Prop.ForAll(messages.ToArbitrary(), message =>
        {
            long start = Stopwatch.GetTimestamp();
            var m = DnsParser.Parse(message);
            long ticks = Stopwatch.GetTimestamp() - start;
            parseTicks += ticks;
            if (ticks > slowestTicks)
            {
                slowestTicks = ticks;
                slowest = message;
            }
            parsed++;
            bytes += message.Length;
            if (m.Malformed != DnsMalformation.None)
            {
                malformed++;
            }
            reasons[m.Malformed] = reasons.GetValueOrDefault(m.Malformed) + 1;
            AssertConsistent(message, m);
        });
        var watch = Stopwatch.StartNew();
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(count).WithEndSize(600), prop);
        watch.Stop();
        parsed.Should().BeGreaterThanOrEqualTo(count);
        // The slowest single parse is usually a GC pause or preemption: timing that message again says which.
        long best = long.MaxValue;
        for (int i = 0; i < 1000; i++)
        {
            long start = Stopwatch.GetTimestamp();
            DnsParser.Parse(slowest);
            best = Math.Min(best, Stopwatch.GetTimestamp() - start);
        }
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name}: {parsed} messages ({bytes / Math.Max(parsed, 1)} B avg), {malformed} malformed, {watch.ElapsedMilliseconds} ms total incl. generation, " +
            $"parsing alone {parseTicks * 1e3 / Stopwatch.Frequency:F0} ms ({parseTicks * 1e9 / Stopwatch.Frequency / Math.Max(parsed, 1):F0} ns/msg); " +
            $"slowest parse {slowestTicks * 1e6 / Stopwatch.Frequency:F1} µs, that message ({slowest.Length} B) re-timed: {best * 1e6 / Stopwatch.Frequency:F1} µs"));
        output.WriteLine("  " + string.Join(", ", reasons.OrderByDescending(r => r.Value).Select(r => $"{r.Key}={r.Value}")));
    }

    private static void AssertConsistent(byte[] message, DnsMessage m)
    {
        if (message.Length < 12)
        {
            m.Malformed.Should().Be(DnsMalformation.HeaderTruncated);
            return;
        }
        DnsParser.TryReadHeader(message, out var header).Should().BeTrue();
        m.Header.Should().Be(header);
        (m.Malformed == DnsMalformation.None).Should().Be(m.MalformedOffset == -1);
        m.MalformedOffset.Should().BeLessThanOrEqualTo(message.Length);
        m.Answers.Count.Should().BeLessThanOrEqualTo(Math.Min((int)header.AnswerCount, DnsParser.DefaultMaxAnswers));
        if (!m.HasQuestion)
        {
            m.QuestionName.Should().BeEmpty();
        }
        AssertSafe(m.QuestionName);
        foreach (var a in m.Answers)
        {
            AssertSafe(a.Name);
            AssertSafe(a.Data);
            a.Name.Length.Should().BeGreaterThan(0);
            (a.Address is not null).Should().Be(a.Type is 1 or 28);
        }
    }

    // Whatever arrives, what leaves is printable ASCII (or the cut mark), bounded in length.
    private static void AssertSafe(string s)
    {
        s.Length.Should().BeLessThanOrEqualTo(1100);
        foreach (char c in s)
        {
            if (c is (< ' ' or > '~') and not '…')
            {
                throw new Xunit.Sdk.XunitException($"unsafe character U+{(int)c:X4} in \"{s}\"");
            }
        }
    }

    private static byte[] Mutate(byte[] original, Random random, int mutations)
    {
        var bytes = new List<byte>(original);
        for (int i = 0; i < mutations && bytes.Count > 0; i++)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(9))
            {
                case 0: // flip one bit
                    bytes[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1: // any byte
                    bytes[at] = (byte)random.Next(256);
                    break;
                case 2: // truncate
                    bytes.RemoveRange(at, bytes.Count - at);
                    break;
                case 3: // a compression pointer anywhere, to anywhere (backwards, itself, forwards, out of range)
                    int target = random.Next(4) switch
                    {
                        0 => at,
                        1 => random.Next(Math.Max(at, 1)),
                        2 => at + random.Next(1, 40),
                        _ => random.Next(0x4000),
                    };
                    bytes[at] = (byte)(0xC0 | (target >> 8 & 0x3F));
                    if (at + 1 < bytes.Count)
                    {
                        bytes[at + 1] = (byte)target;
                    }
                    break;
                case 4: // an oversize label length or reserved label type
                    bytes[at] = (byte)random.Next(64, 192);
                    break;
                case 5: // a count in the header
                    if (original.Length >= 12)
                    {
                        int field = 4 + 2 * random.Next(4);
                        ushort value = (ushort)(random.Next(3) == 0 ? 0xffff : random.Next(0, 10));
                        if (field + 1 < bytes.Count)
                        {
                            bytes[field] = (byte)(value >> 8);
                            bytes[field + 1] = (byte)value;
                        }
                    }
                    break;
                case 6: // duplicate a slice (repeated labels, long names)
                    int length = random.Next(1, Math.Min(64, bytes.Count - at) + 1);
                    bytes.InsertRange(at, bytes.GetRange(at, length));
                    break;
                case 7: // delete a slice (lengths that now lie)
                    bytes.RemoveRange(at, random.Next(1, Math.Min(8, bytes.Count - at) + 1));
                    break;
                default: // insert random bytes
                    var extra = new byte[random.Next(1, 8)];
                    random.NextBytes(extra);
                    bytes.InsertRange(at, extra);
                    break;
            }
        }
        return [.. bytes];
    }

    private static byte[][] BuildCorpus()
    {
        var built = new List<byte[]>(DnsParserTests.Real.All);
        var random = new Random(1035);
        for (int i = 0; i < 40; i++)
        {
            built.Add(Model.Generate(random).Encode());
        }
        return [.. built];
    }

    /// <summary>Reference presentation form, written independently of the parser.</summary>
    private static string Present(IReadOnlyList<byte[]> labels) => labels.Count == 0 ? "." : string.Join(".", labels.Select(label =>
        string.Concat(label.Select(b => b switch
        {
            >= (byte)'A' and <= (byte)'Z' => ((char)(b + 32)).ToString(),
            (byte)'.' or (byte)'\\' => "\\" + (char)b,
            > 0x20 and < 0x7f => ((char)b).ToString(),
            _ => "\\" + b.ToString("D3", CultureInfo.InvariantCulture),
        }))));

    private sealed record Answer(byte[][] Owner, ushort Type, uint Ttl, byte[] Rdata, byte[][]? Target, ushort Preference, string ExpectedData);

    private sealed record Model(ushort Id, ushort Flags, byte[][] Question, ushort QuestionType, List<Answer> Answers, bool Compress)
    {
        public static Model Generate(Random r)
        {
            var question = RandomName(r);
            var names = new List<byte[][]> { question };
            var answers = new List<Answer>();
            int count = r.Next(0, 8);
            for (int i = 0; i < count; i++)
            {
                // Owners mostly reuse earlier names, as real answers do, so compression has work.
                var owner = r.Next(3) > 0 ? names[r.Next(names.Count)] : RandomName(r);
                uint ttl = (uint)r.NextInt64(0, 1L << 32);
                switch (r.Next(6))
                {
                    case 0:
                        var v4 = new byte[4];
                        r.NextBytes(v4);
                        answers.Add(new Answer(owner, 1, ttl, v4, null, 0, new IPAddress(v4).ToString()));
                        break;
                    case 1:
                        var v6 = new byte[16];
                        r.NextBytes(v6);
                        answers.Add(new Answer(owner, 28, ttl, v6, null, 0, new IPAddress(v6).ToString()));
                        break;
                    case 2:
                        var target = RandomName(r);
                        names.Add(target);
                        answers.Add(new Answer(owner, 5, ttl, [], target, 0, Present(target)));
                        break;
                    case 3:
                        var exchange = names[r.Next(names.Count)];
                        ushort preference = (ushort)r.Next(65536);
                        answers.Add(new Answer(owner, 15, ttl, [], exchange, preference,
                            $"{preference.ToString(CultureInfo.InvariantCulture)} {Present(exchange)}"));
                        break;
                    case 4:
                        var strings = Enumerable.Range(0, r.Next(1, 4)).Select(_ => RandomBytes(r, r.Next(0, 30), printable: r.Next(2) == 0)).ToArray();
                        var rdata = strings.SelectMany(s => new[] { (byte)s.Length }.Concat(s)).ToArray();
                        answers.Add(new Answer(owner, 16, ttl, rdata, null, 0, string.Join(" ", strings.Select(Quote))));
                        break;
                    default:
                        var raw = RandomBytes(r, r.Next(0, 40), printable: false);
                        ushort type = (ushort)r.Next(1000, 2000);
                        answers.Add(new Answer(owner, type, ttl, raw, null, 0,
                            raw.Length == 0 ? @"\# 0" : $@"\# {raw.Length} {Convert.ToHexString(raw)}"));
                        break;
                }
            }
            return new Model((ushort)r.Next(65536), (ushort)r.Next(65536), question, (ushort)r.Next(65536), answers, r.Next(2) == 0);
        }

        public byte[] Encode()
        {
            var b = new DnsPacketBuilder(Id, Flags, 1, Answers.Count);
            b.Labels(Question, Compress).U16(QuestionType).U16(1);
            foreach (var a in Answers)
            {
                if (a.Target is null)
                {
                    b.Labels(a.Owner, Compress).U16(a.Type).U16(1).U32(a.Ttl).U16((ushort)a.Rdata.Length).Bytes(a.Rdata);
                }
                else
                {
                    byte[] prefix = a.Type == 15 ? [(byte)(a.Preference >> 8), (byte)a.Preference] : [];
                    b.NameRecord(a.Owner, a.Type, a.Target, a.Ttl, prefix, Compress);
                }
            }
            return b.Build();
        }

        private static byte[][] RandomName(Random r)
        {
            // Up to 5 labels of up to 20 octets: always within 255.
            int labels = r.Next(0, 6);
            return Enumerable.Range(0, labels).Select(_ => RandomBytes(r, r.Next(1, 21), printable: r.Next(8) > 0)).ToArray();
        }

        private static byte[] RandomBytes(Random r, int length, bool printable)
        {
            const string alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
            var bytes = new byte[length];
            for (int i = 0; i < length; i++)
            {
                bytes[i] = printable ? (byte)alphabet[r.Next(alphabet.Length)] : (byte)r.Next(256);
            }
            return bytes;
        }

        private static string Quote(byte[] s) => "\"" + string.Concat(s.Select(b => b switch
        {
            (byte)'"' or (byte)'\\' => "\\" + (char)b,
            >= 0x20 and < 0x7f => ((char)b).ToString(),
            _ => "\\" + b.ToString("D3", CultureInfo.InvariantCulture),
        })) + "\"";
    }
}
