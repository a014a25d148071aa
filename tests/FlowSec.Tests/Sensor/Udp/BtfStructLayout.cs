using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace FlowSec.Tests.Sensor.Udp;

/// <summary>Compares a C# mirror struct with a struct in a BTF dump (bpftool's raw format).</summary>
internal static class BtfStructLayout
{
    /// <summary>
    /// Asserts that <typeparamref name="T"/> has the size of struct <paramref name="name"/> and the
    /// same fields, in the same order, at the same offsets. Returns the size.
    /// </summary>
    public static int AssertMatches<T>(string btf, string name)
    {
        var header = Regex.Match(btf, $@"STRUCT '{name}' size=(\d+) vlen=(\d+)");
        header.Success.Should().BeTrue($"the object's BTF must describe struct {name}");
        int size = int.Parse(header.Groups[1].Value);
        int memberCount = int.Parse(header.Groups[2].Value);
        var members = btf[(header.Index + header.Length)..]
            .Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Take(memberCount)
            .Select(line => Regex.Match(line, @"^\s+'(\w+)' type_id=\d+ bits_offset=(\d+)"))
            .Select(m => (Name: m.Groups[1].Value, BitOffset: int.Parse(m.Groups[2].Value)))
            .ToList();

        members.Should().HaveCount(memberCount);
        Marshal.SizeOf<T>().Should().Be(size, $"size of {name}");
        typeof(T).GetFields(BindingFlags.Public | BindingFlags.Instance).Select(f => f.Name)
            .Should().Equal(members.Select(m => m.Name), $"the C# mirror of {name} must have the same fields in the same order");
        foreach (var (field, bitOffset) in members)
        {
            ((int)Marshal.OffsetOf<T>(field) * 8).Should().Be(bitOffset, $"offset of {name}.{field}");
        }
        return size;
    }

    /// <summary>The value of enumerator or #define <paramref name="name"/> in bpf/flowsec.h.</summary>
    public static long HeaderValue(string name, bool define = false)
    {
        string header = File.ReadAllText(Path.Combine(RepoRoot(), "bpf", "flowsec.h"));
        var m = Regex.Match(header, define ? $@"#define\s+{name}\s+(\d+)" : $@"\b{name}\s*=\s*(\d+)");
        m.Success.Should().BeTrue($"{name} must be defined in flowsec.h");
        return long.Parse(m.Groups[1].Value);
    }

    private static string RepoRoot([CallerFilePath] string thisFile = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(thisFile)!, "..", "..", "..", ".."));
}
