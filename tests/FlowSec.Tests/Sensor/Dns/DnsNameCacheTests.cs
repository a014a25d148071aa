using System.Net;
using FlowSec.Sensor.Dns;

namespace FlowSec.Tests.Sensor.Dns;

public class DnsNameCacheTests
{
    private static readonly IPAddress Web = IPAddress.Parse("10.1.2.3");

    [Fact]
    public void A_answer_maps_its_address_to_the_question()
    {
        var cache = NewCache();

        cache.Learn(DnsParser.Parse(DnsParserTests.Real.ResponseWebA));

        cache.NamesFor(Web).Should().Equal("web.flowsec.test");
        cache.NamesFor(IPAddress.Parse("10.1.2.4")).Should().BeEmpty();
    }

    [Fact]
    public void Cname_chain_names_the_address_question_first()
    {
        var cache = NewCache();
        var response = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 3).Question("www.shop.test", 1)
            .Cname("www.shop.test", "shop.cdn.test")
            .Cname("shop.cdn.test", "edge7.cdn.test")
            .A("edge7.cdn.test", "192.0.2.7")
            .Build();

        cache.Learn(DnsParser.Parse(response));

        cache.NamesFor(IPAddress.Parse("192.0.2.7")).Should().Equal("www.shop.test", "shop.cdn.test", "edge7.cdn.test");
    }

    [Fact]
    public void Aaaa_and_ipv4_mapped_lookups()
    {
        var cache = NewCache();
        cache.Learn(DnsParser.Parse(DnsParserTests.Real.ResponseHostAaaa));
        cache.Learn(DnsParser.Parse(DnsParserTests.Real.ResponseWebA));

        cache.NamesFor(IPAddress.Parse("fd00::4")).Should().Equal("host.flowsec.test");
        cache.NamesFor(Web.MapToIPv6()).Should().Equal(new[] { "web.flowsec.test" }, "a dual-stack socket reports ::ffff:a.b.c.d");
    }

    /// <summary>Flows look names up from their raw address bytes, as events carry them.</summary>
    [Fact]
    public void Raw_address_bytes_find_the_same_names()
    {
        var cache = NewCache();
        cache.Learn(DnsParser.Parse(DnsParserTests.Real.ResponseHostAaaa));
        cache.Learn(DnsParser.Parse(DnsParserTests.Real.ResponseWebA));

        cache.NamesFor(Web.GetAddressBytes()).Should().Equal("web.flowsec.test");
        cache.NamesFor(Web.MapToIPv6().GetAddressBytes()).Should().Equal("web.flowsec.test");
        cache.NamesFor(IPAddress.Parse("fd00::4").GetAddressBytes()).Should().Equal("host.flowsec.test");
        cache.NamesFor(IPAddress.Parse("10.1.2.4").GetAddressBytes()).Should().BeEmpty();
        cache.NamesFor(new byte[] { 10, 1, 2, 3, 0 }).Should().BeEmpty("only 4- and 16-byte addresses are addresses");
        cache.NamesFor(ReadOnlySpan<byte>.Empty).Should().BeEmpty();
    }

    [Fact]
    public void Records_off_the_chain_and_failed_lookups_teach_nothing()
    {
        var cache = NewCache();
        // An answer section that also claims an unrelated name's address: not reached from the question.
        var planted = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 2).Question("a.test", 1)
            .A("a.test", "192.0.2.1")
            .A("bank.example", "192.0.2.66")
            .Build();
        var nx = new DnsPacketBuilder(2, DnsPacketBuilder.ResponseFlags | 3, 1, 1).Question("b.test", 1)
            .A("b.test", "192.0.2.2")
            .Build();

        cache.Learn(DnsParser.Parse(planted));
        cache.Learn(DnsParser.Parse(nx));
        cache.Learn(DnsParser.Parse(DnsParserTests.Real.QueryWebA));

        cache.NamesFor(IPAddress.Parse("192.0.2.1")).Should().Equal("a.test");
        cache.NamesFor(IPAddress.Parse("192.0.2.66")).Should().BeEmpty();
        cache.NamesFor(IPAddress.Parse("192.0.2.2")).Should().BeEmpty("an NXDOMAIN response teaches nothing");
    }

    [Fact]
    public void Cname_loop_ends()
    {
        var cache = NewCache();
        var response = new DnsPacketBuilder(1, DnsPacketBuilder.ResponseFlags, 1, 3).Question("x.test", 1)
            .Cname("x.test", "y.test")
            .Cname("y.test", "x.test")
            .A("y.test", "192.0.2.9")
            .Build();

        cache.Learn(DnsParser.Parse(response));

        cache.NamesFor(IPAddress.Parse("192.0.2.9")).Should().Equal("x.test", "y.test");
    }

    [Fact]
    public void Names_expire_after_their_ttl_clamped_to_the_minimum()
    {
        var time = new ManualTime();
        var cache = new DnsNameCache(100, TimeSpan.FromSeconds(30), TimeSpan.FromHours(1), time: time);

        cache.Add(Web, "short.test", ttlSeconds: 5);   // kept for the 30 s minimum
        cache.Add(Web, "long.test", ttlSeconds: 120);

        time.Advance(TimeSpan.FromSeconds(29));
        cache.NamesFor(Web).Should().Equal("long.test", "short.test");
        time.Advance(TimeSpan.FromSeconds(2));
        cache.NamesFor(Web).Should().Equal("long.test");
        time.Advance(TimeSpan.FromSeconds(90));
        cache.NamesFor(Web).Should().BeEmpty();
        cache.Count.Should().Be(0, "an address with no live name is dropped");
    }

    [Fact]
    public void Ttl_is_capped_by_the_maximum_and_a_top_bit_ttl_means_zero()
    {
        var time = new ManualTime();
        var cache = new DnsNameCache(100, TimeSpan.FromSeconds(10), TimeSpan.FromMinutes(1), time: time);

        cache.Add(Web, "capped.test", ttlSeconds: 86_400);
        cache.Add(IPAddress.Parse("10.9.9.9"), "bogus.test", ttlSeconds: 0x8000_0000);

        time.Advance(TimeSpan.FromSeconds(11));
        cache.NamesFor(IPAddress.Parse("10.9.9.9")).Should().BeEmpty();
        time.Advance(TimeSpan.FromSeconds(50));
        cache.NamesFor(Web).Should().BeEmpty();
    }

    [Fact]
    public void Bounded_by_address_count_evicting_the_least_recently_used()
    {
        var cache = new DnsNameCache(3, TimeSpan.FromMinutes(1), TimeSpan.FromHours(1));
        for (int i = 1; i <= 3; i++)
        {
            cache.Add(IPAddress.Parse($"10.0.0.{i}"), $"n{i}.test", 60);
        }
        cache.NamesFor(IPAddress.Parse("10.0.0.1")).Should().NotBeEmpty(); // touch: 10.0.0.2 is now the oldest

        cache.Add(IPAddress.Parse("10.0.0.4"), "n4.test", 60);

        cache.Count.Should().Be(3);
        cache.Evicted.Should().Be(1);
        cache.NamesFor(IPAddress.Parse("10.0.0.2")).Should().BeEmpty();
        cache.NamesFor(IPAddress.Parse("10.0.0.1")).Should().Equal("n1.test");
        cache.NamesFor(IPAddress.Parse("10.0.0.4")).Should().Equal("n4.test");
    }

    [Fact]
    public void Bounded_by_names_per_address_keeping_the_newest()
    {
        var cache = new DnsNameCache(10, TimeSpan.FromMinutes(1), TimeSpan.FromHours(1), maxNamesPerAddress: 2);

        cache.Add(Web, "a.test", 60);
        cache.Add(Web, "b.test", 60);
        cache.Add(Web, "c.test", 60);
        cache.Add(Web, "b.test", 60);

        cache.NamesFor(Web).Should().Equal("b.test", "c.test");
    }

    [Fact]
    public async Task Concurrent_writers_and_readers()
    {
        var cache = new DnsNameCache(1000, TimeSpan.FromMinutes(1), TimeSpan.FromHours(1));
        var tasks = Enumerable.Range(0, 4).Select(w => Task.Run(() =>
        {
            for (int i = 0; i < 20_000; i++)
            {
                var ip = new IPAddress(new byte[] { 10, (byte)w, (byte)(i >> 8), (byte)i });
                cache.Add(ip, $"n{i % 7}.test", 60);
                // Other writers may already have evicted it: only that the call is safe matters here.
                cache.NamesFor(ip);
            }
        })).ToArray();

        await Task.WhenAll(tasks);

        cache.Count.Should().Be(1000);
        cache.Evicted.Should().Be(4 * 20_000 - 1000);
    }

    private static DnsNameCache NewCache() => new(1000, TimeSpan.FromMinutes(5), TimeSpan.FromHours(24));

    private sealed class ManualTime : TimeProvider
    {
        private long _ticks = 1_000_000;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => _ticks;

        public void Advance(TimeSpan by) => _ticks += by.Ticks;
    }
}
