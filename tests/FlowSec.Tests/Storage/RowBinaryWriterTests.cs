using FlowSec.Relay.Storage;

namespace FlowSec.Tests.Storage;

/// <summary>RowBinary encoding, checked byte by byte and by the real clickhouse-client reading what we inserted.</summary>
public sealed class RowBinaryWriterTests(ClickHouseServer ch) : IClassFixture<ClickHouseServer>
{
    [Theory]
    [InlineData(0UL, "00")]
    [InlineData(127UL, "7F")]
    [InlineData(128UL, "8001")]
    [InlineData(300UL, "AC02")]
    [InlineData(16384UL, "808001")]
    [InlineData(ulong.MaxValue, "FFFFFFFFFFFFFFFFFF01")]
    public void VarUInt_is_LEB128(ulong value, string hex)
    {
        var w = new RowBinaryWriter();
        w.WriteVarUInt(value);
        Convert.ToHexString(w.WrittenMemory.Span).Should().Be(hex);
    }

    [Fact]
    public void Numbers_are_little_endian_and_strings_length_prefixed()
    {
        var w = new RowBinaryWriter(16);
        w.WriteUInt16(0x0102);
        w.WriteInt32(-2);
        w.WriteString("é");
        w.WriteFixedString([0xAA], 3);
        w.WriteDateTime(DateTimeOffset.FromUnixTimeSeconds(0x01020304));
        w.WriteArray(new[] { 1u }, (x, v) => x.WriteUInt32(v));
        w.WriteEnum8(-1);

        Convert.ToHexString(w.WrittenMemory.Span).Should().Be("0201" + "FEFFFFFF" + "02C3A9" + "AA0000" + "04030201" + "01" + "01000000" + "FF");
    }

    [Theory]
    [InlineData("", 0)]
    [InlineData("a", 1)]
    [InlineData("a", 42)] // the longest string encoded in one pass
    [InlineData("a", 43)] // the shortest counted first
    [InlineData("a", 128)] // a two-byte length
    [InlineData("中", 42)] // 126 bytes: still a one-byte length
    [InlineData("😀", 21)] // surrogate pairs: 42 units, 84 bytes
    [InlineData("\ud800", 42)] // unpaired surrogates become U+FFFD, 3 bytes each
    [InlineData("é", 64)]
    public void Strings_of_any_length_are_their_UTF8_bytes_after_a_LEB128_length(string unit, int repeat)
    {
        var value = string.Concat(Enumerable.Repeat(System.Text.RegularExpressions.Regex.Unescape(unit), repeat));
        var w = new RowBinaryWriter(16); // grows while writing
        w.WriteString(value);
        w.WriteString(value);

        // The raw-bytes overload: the length as LEB128, then the bytes Encoding.UTF8 makes of the value.
        var expected = new RowBinaryWriter();
        expected.WriteString(System.Text.Encoding.UTF8.GetBytes(value).AsSpan());
        expected.WriteString(System.Text.Encoding.UTF8.GetBytes(value).AsSpan());
        w.WrittenMemory.ToArray().Should().Equal(expected.WrittenMemory.ToArray());
    }

    [Theory]
    [InlineData(0, "00")]
    [InlineData(1, "01")]
    [InlineData(127, "7F")] // the longest with a one-byte length, written in one reservation
    [InlineData(128, "8001")]
    [InlineData(300, "AC02")]
    public void Raw_UTF8_strings_are_a_LEB128_length_then_the_bytes(int length, string lengthHex)
    {
        var value = Enumerable.Range(0, length).Select(i => (byte)('a' + i % 26)).ToArray();
        var w = new RowBinaryWriter(16); // grows while writing
        w.WriteUInt8(0xEE);
        w.WriteString(value.AsSpan());
        w.WriteString(value.AsSpan());

        var one = Convert.FromHexString(lengthHex).Concat(value).ToArray();
        w.WrittenMemory.ToArray().Should().Equal([0xEE, .. one, .. one]);
    }

    [Fact]
    public void FixedString_refuses_values_that_do_not_fit()
    {
        var act = () => new RowBinaryWriter().WriteFixedString(new byte[17], 16);
        act.Should().Throw<ArgumentException>();
    }

    [Fact]
    public async Task The_real_client_reads_every_type_we_write()
    {
        var db = ClickHouseServer.NewDatabase();
        await ch.Client.ExecuteAsync($"CREATE DATABASE {db}");
        await ch.Client.ExecuteAsync(
            $"CREATE TABLE {db}.t (n UInt32, u8 UInt8, u16 UInt16, u32 UInt32, u64 UInt64, i8 Int8, i16 Int16, i32 Int32, i64 Int64, " +
            "s String, fs FixedString(16), dt DateTime('UTC'), arr Array(String), nums Array(UInt32), e Enum8('neg' = -1, 'two' = 2)) " +
            "ENGINE = MergeTree ORDER BY n");
        var longString = new string('x', 20_000); // a 3-byte LEB128 length
        var w = new RowBinaryWriter(8);
        foreach (var (n, max) in new[] { (1u, false), (2u, true) })
        {
            w.WriteUInt32(n);
            w.WriteUInt8(max ? byte.MaxValue : (byte)0);
            w.WriteUInt16(max ? ushort.MaxValue : (ushort)0);
            w.WriteUInt32(max ? uint.MaxValue : 0);
            w.WriteUInt64(max ? ulong.MaxValue : 0);
            w.WriteInt8(max ? sbyte.MaxValue : sbyte.MinValue);
            w.WriteInt16(max ? short.MaxValue : short.MinValue);
            w.WriteInt32(max ? int.MaxValue : int.MinValue);
            w.WriteInt64(max ? long.MaxValue : long.MinValue);
            w.WriteString(max ? longString : "tab\there 'q' é");
            w.WriteFixedString(max ? Enumerable.Range(1, 16).Select(b => (byte)b).ToArray() : [0xFF], 16);
            w.WriteDateTime(DateTimeOffset.FromUnixTimeSeconds(max ? 4_000_000_000 : 1_700_000_000));
            w.WriteArray(max ? new[] { "a", "", "c" } : Array.Empty<string>(), (x, s) => x.WriteString(s));
            w.WriteArray(max ? new[] { 7u, uint.MaxValue } : [], (x, v) => x.WriteUInt32(v));
            w.WriteEnum8(max ? (sbyte)2 : (sbyte)-1);
        }

        await ch.Client.InsertRowBinaryAsync($"{db}.t", ["n", "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "s", "fs", "dt", "arr", "nums", "e"], w.WrittenMemory);

        var tsv = await ch.RunClientAsync(
            $"SELECT u8, u16, u32, u64, i8, i16, i32, i64, length(s), substring(s, 1, 20), hex(fs), toUnixTimestamp(dt), arr, nums, e FROM {db}.t ORDER BY n FORMAT TabSeparated");

        tsv.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal(
            "0\t0\t0\t0\t-128\t-32768\t-2147483648\t-9223372036854775808\t15\ttab\\there \\'q\\' é\tFF000000000000000000000000000000\t1700000000\t[]\t[]\tneg",
            "255\t65535\t4294967295\t18446744073709551615\t127\t32767\t2147483647\t9223372036854775807\t20000\txxxxxxxxxxxxxxxxxxxx\t" +
            "0102030405060708090A0B0C0D0E0F10\t4000000000\t['a','','c']\t[7,4294967295]\ttwo");
    }
}
