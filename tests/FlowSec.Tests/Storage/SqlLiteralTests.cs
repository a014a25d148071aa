using System.Net;
using System.Text;
using System.Text.Json;
using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>
/// The one escaping function, with hostile input, checked where it matters: ClickHouse parses the
/// literal and must return exactly the input, and the query around it must keep its shape.
/// </summary>
public sealed class SqlLiteralTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    public static TheoryData<string> Hostile =>
    [
        "", "'", "''", "\\", "\\'", "\\\\'", "'; DROP TABLE system.one; --", "x' OR '1'='1", "--", "-- c\n",
        "/*", "*/", ";", "\0", "a\0b", "\0'\0", "\n\r\t\b\f\v\a", "\x1b[31mred", "\x7f", "\\x41", "\\0", "\\N",
        "é中😀", "{p:String}", "?", "$1", "%s", "`x`", "\"q\"", "a\u2028b\u00a0c", "\uFEFF",
    ];

    [Theory]
    [MemberData(nameof(Hostile))]
    public async Task String_round_trips_through_the_server_byte_for_byte(string value)
    {
        var literal = SqlLiteral.String(value);
        literal.Should().NotContainAny(Enumerable.Range(0, 32).Select(c => ((char)c).ToString()), "control characters travel escaped");

        var row = await SingleRowAsync($"SELECT {literal} AS s, hex(s) AS h, length(s) AS n, 1 AS shape_ok");

        row.GetProperty("h").GetString().Should().Be(Convert.ToHexString(Encoding.UTF8.GetBytes(value)));
        row.GetProperty("s").GetString().Should().Be(value);
        row.GetProperty("shape_ok").GetInt32().Should().Be(1);
    }

    [Fact]
    public async Task Random_hostile_strings_round_trip_in_one_query()
    {
        const int seed = 20261122;
        var random = new Random(seed);
        string[] alphabet = ["'", "\\", "\0", "\n", "\r", "\t", "\x01", "\x1f", "\x7f", "-", ";", "/", "*", "{", "}", "?", "$", "`", "\"",
            "a", "Z", "0", " ", "é", "中", "😀", "\u00ff", "x", "\\x", "''"];
        var values = Enumerable.Range(0, 300)
            .Select(_ => string.Concat(Enumerable.Range(0, random.Next(0, 40)).Select(_ => alphabet[random.Next(alphabet.Length)])))
            .ToList();

        var row = await SingleRowAsync($"SELECT arrayMap(x -> hex(x), {SqlLiteral.StringArray(values)}) AS h");

        row.GetProperty("h").EnumerateArray().Select(h => h.GetString()).Should()
            .Equal(values.Select(v => Convert.ToHexString(Encoding.UTF8.GetBytes(v))), $"seed {seed}");
    }

    [Fact]
    public async Task A_one_megabyte_string_round_trips()
    {
        var random = new Random(7);
        string[] pieces = ["a", "b", "'", "\\", "\0", "\n", "-", ";", "é", "😀"];
        var value = new StringBuilder(1 << 20);
        while (value.Length < 1 << 20)
        {
            value.Append(pieces[random.Next(pieces.Length)]);
        }

        var text = value.ToString();
        var row = await SingleRowAsync($"SELECT hex({SqlLiteral.String(text)}) AS h");

        row.GetProperty("h").GetString().Should().Be(Convert.ToHexString(Encoding.UTF8.GetBytes(text)));
    }

    [Fact]
    public async Task Raw_bytes_round_trip_including_invalid_utf8()
    {
        var bytes = Enumerable.Range(0, 256).Select(b => (byte)b).ToArray();

        var row = await SingleRowAsync($"SELECT hex({SqlLiteral.String(bytes)}) AS h");

        row.GetProperty("h").GetString().Should().Be(Convert.ToHexString(bytes));
    }

    [Fact]
    public void Lone_surrogates_are_refused_rather_than_silently_replaced()
    {
        var act = () => SqlLiteral.String("a\ud800b");
        act.Should().Throw<ArgumentException>().WithMessage("*surrogate*");
    }

    [Fact]
    public void Escapes_are_the_documented_ones()
    {
        SqlLiteral.String("it's \\ \0\x7f é").Should().Be(@"'it\'s \\ \x00\x7F é'");
        SqlLiteral.Integer(-5).Should().Be("(-5)");
        SqlLiteral.Integer(42L).Should().Be("42");
        SqlLiteral.Integer(ulong.MaxValue).Should().Be("18446744073709551615");
        SqlLiteral.Ip(IPAddress.Parse("10.1.2.3")).Should().Be("toFixedString(unhex('00000000000000000000FFFF0A010203'), 16)");
    }

    [Fact]
    public async Task Integers_keep_their_value_next_to_a_minus_sign()
    {
        // "1--5" would be 1 followed by a comment; the literal must keep it arithmetic.
        var row = await SingleRowAsync(
            $"SELECT 1-{SqlLiteral.Integer(-5)} AS a, {SqlLiteral.Integer(long.MinValue)} AS b, {SqlLiteral.Integer(ulong.MaxValue)} AS c");

        row.GetProperty("a").GetInt64().Should().Be(6);
        row.GetProperty("b").GetString().Should().Be(long.MinValue.ToString(System.Globalization.CultureInfo.InvariantCulture));
        row.GetProperty("c").GetString().Should().Be(ulong.MaxValue.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public async Task DateTime_and_ip_literals_mean_what_they_say()
    {
        var t = new DateTimeOffset(2026, 11, 22, 2, 15, 30, TimeSpan.FromHours(3));

        var row = await SingleRowAsync(
            $"SELECT toUnixTimestamp({SqlLiteral.DateTime(t)}) AS t, IPv6NumToString({SqlLiteral.Ip(IPAddress.Parse("10.1.2.3"))}) AS v4, " +
            $"IPv6NumToString({SqlLiteral.Ip(IPAddress.Parse("fd00::1:2"))}) AS v6");

        row.GetProperty("t").GetInt64().Should().Be(t.ToUnixTimeSeconds());
        row.GetProperty("v4").GetString().Should().Be("::ffff:10.1.2.3");
        row.GetProperty("v6").GetString().Should().Be("fd00::1:2");
    }

    [Fact]
    public void DateTime_outside_the_column_range_is_refused()
    {
        ((Action)(() => SqlLiteral.DateTime(new DateTimeOffset(1969, 12, 31, 0, 0, 0, TimeSpan.Zero)))).Should().Throw<ArgumentOutOfRangeException>();
        ((Action)(() => SqlLiteral.DateTime(new DateTimeOffset(2200, 1, 1, 0, 0, 0, TimeSpan.Zero)))).Should().Throw<ArgumentOutOfRangeException>();
    }

    [Theory]
    [InlineData("flows")]
    [InlineData("flowsec.flows")]
    [InlineData("src_labels.key")]
    [InlineData("_x1")]
    public void Identifier_accepts_plain_names(string name) => SqlLiteral.Identifier(name).Should().Be(name);

    [Theory]
    [InlineData("")]
    [InlineData("1abc")]
    [InlineData("a b")]
    [InlineData("a;DROP")]
    [InlineData("a`b")]
    [InlineData("a--")]
    [InlineData("db.")]
    [InlineData("é")]
    public void Identifier_refuses_anything_else(string name)
    {
        var act = () => SqlLiteral.Identifier(name);
        act.Should().Throw<ArgumentException>();
    }

    private async Task<JsonElement> SingleRowAsync(string sql)
    {
        var rows = new List<JsonElement>();
        await foreach (var row in ch.Client.QueryJsonEachRowAsync(sql))
        {
            rows.Add(row);
        }

        rows.Should().ContainSingle();
        return rows[0];
    }
}
