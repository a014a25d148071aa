using System.Text;
using FlowSec.Api.V1;
using FlowSec.Relay.Storage;
using FsCheck;
using FsCheck.Fluent;
using Google.Protobuf.Collections;

namespace FlowSec.Tests.Storage;

/// <summary>
/// The packed form of an endpoint's labels and names (one String column each): exact bytes, the
/// round trip back to the map and list, and the RowBinary writers agreeing with the string form.
/// </summary>
public class PackedStringsTests
{
    // Characters that make escaping matter, mixed with ordinary and multi-byte ones.
    private static readonly char[] Alphabet = ['a', 'Z', '.', '=', '0', '1', '2', '\\', '\'', '\0', '\x1d', '\x1e', '\x1f', 'é', '中'];

    [Fact]
    public void The_form_is_separator_before_every_item_and_after_the_last_with_separators_escaped()
    {
        PackedStrings.Labels([]).Should().Be("", "no labels cost only the String's length byte");
        PackedStrings.Labels([new("app", "web"), new("tier", "db")]).Should().Be("\x1e" + "app\x1fweb\x1etier\x1f" + "db\x1e");
        PackedStrings.Labels([new("k", "")]).Should().Be("\x1ek\x1f\x1e");
        PackedStrings.Labels([new("a\x1d" + "0", "\x1e\x1f")]).Should().Be("\x1e" + "a\x1d" + "00\x1f\x1d" + "1\x1d" + "2\x1e");
        PackedStrings.Names([]).Should().Be("");
        PackedStrings.Names([""]).Should().Be("\x1e\x1e", "one empty name is not no name");
        PackedStrings.Names(["a.com", "B.COM."]).Should().Be("\x1e" + "a.com\x1e" + "B.COM.\x1e");
    }

    [Fact]
    public void Labels_and_names_read_back_exactly_whatever_they_hold()
    {
        var items = Gen.ArrayOf(Gen.Elements(Alphabet)).Select(c => new string(c));
        var cases =
            from keys in Gen.ListOf(items)
            from values in Gen.ListOf(items)
            from names in Gen.ListOf(items)
            select (keys, values, names);
        var prop = Prop.ForAll(cases.ToArbitrary(), c =>
        {
            var endpoint = new Endpoint();
            foreach (var (key, value) in c.keys.Zip(c.values))
            {
                endpoint.Labels[key] = value;
            }
            endpoint.Names.AddRange(c.names);

            var labels = PackedStrings.Labels(endpoint.Labels);
            var names = PackedStrings.Names(endpoint.Names);
            var read = new Endpoint();
            PackedStrings.ReadLabels(labels, read.Labels);
            PackedStrings.ReadNames(names, read.Names);

            read.Labels.Should().Equal(endpoint.Labels);
            read.Labels.Keys.Should().Equal(endpoint.Labels.Keys, "the map's order is kept");
            read.Names.Should().Equal(endpoint.Names);
            WrittenString(w => PackedStrings.WriteLabels(w, endpoint.Labels)).Should().Equal(StringBytes(labels));
            WrittenString(w => PackedStrings.WriteNames(w, endpoint.Names)).Should().Equal(StringBytes(names));

            // A label is found by substring exactly when the endpoint has it.
            foreach (var key in c.keys.Concat(c.values).Concat(c.names).Take(6))
            {
                labels.Contains(PackedStrings.LabelKeyNeedle(key), StringComparison.Ordinal).Should().Be(endpoint.Labels.ContainsKey(key));
                foreach (var value in c.values.Take(3))
                {
                    labels.Contains(PackedStrings.LabelNeedle(key, value), StringComparison.Ordinal)
                        .Should().Be(endpoint.Labels.TryGetValue(key, out var v) && v == value);
                }
            }
        });
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(1000), prop);
    }

    [Fact]
    public void The_byte_level_escaper_of_the_ingest_decoder_matches_the_string_one()
    {
        foreach (var text in new[] { "", "plain", "\x1d\x1e\x1f", "a\x1d" + "0b", "é\x1e中", new string('\x1f', 70) })
        {
            var utf8 = Encoding.UTF8.GetBytes(text);
            var destination = new byte[PackedStrings.EscapedLength(utf8)];
            PackedStrings.CopyEscaped(utf8, destination).Should().Be(destination.Length);
            Encoding.UTF8.GetString(destination).Should().Be(PackedStrings.Escaped(text));
        }
    }

    [Theory]
    [InlineData("x")]
    [InlineData("\x1e" + "a")]
    [InlineData("\x1e" + "a\x1dq\x1e")]
    [InlineData("\x1e" + "no-separator\x1e")]
    public void Values_not_in_the_form_are_refused(string packed)
    {
        var labels = new MapField<string, string>();
        var act = () => PackedStrings.ReadLabels(packed, labels);
        act.Should().Throw<FormatException>();
    }

    private static byte[] WrittenString(Action<RowBinaryWriter> write)
    {
        var w = new RowBinaryWriter();
        write(w);
        return w.WrittenMemory.ToArray();
    }

    private static byte[] StringBytes(string value)
    {
        var w = new RowBinaryWriter();
        w.WriteString(value);
        return w.WrittenMemory.ToArray();
    }
}
