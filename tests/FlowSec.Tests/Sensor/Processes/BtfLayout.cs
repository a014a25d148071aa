using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace FlowSec.Tests.Sensor.Processes;

/// <summary>
/// Compares a C# mirror struct with a struct in the BTF of an embedded BPF object (the approach
/// of KernelLayoutTests), and reads enum values and defines out of bpf/flowsec.h.
/// </summary>
internal static class BtfLayout
{
    /// <summary>Asserts that <typeparamref name="T"/> has <paramref name="cStruct"/>'s size, fields, order and offsets.</summary>
    public static void AssertMatches<T>(string btf, string cStruct, int expectedSize) where T : struct
    {
        var header = Regex.Match(btf, $@"STRUCT '{cStruct}' size=(\d+) vlen=(\d+)");
        header.Success.Should().BeTrue($"the object's BTF must describe struct {cStruct}");
        int size = int.Parse(header.Groups[1].Value);
        int memberCount = int.Parse(header.Groups[2].Value);
        var members = btf[(header.Index + header.Length)..]
            .Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Take(memberCount)
            .Select(line => Regex.Match(line, @"^\s+'(\w+)' type_id=\d+ bits_offset=(\d+)"))
            .Select(m => (Name: m.Groups[1].Value, BitOffset: int.Parse(m.Groups[2].Value)))
            .ToList();

        members.Should().HaveCount(memberCount);
        size.Should().Be(expectedSize, $"struct {cStruct} is documented as {expectedSize} bytes");
        Marshal.SizeOf<T>().Should().Be(size, $"the C# mirror of {cStruct} must have its size");
        typeof(T).GetFields(BindingFlags.Public | BindingFlags.Instance).Select(f => f.Name)
            .Should().Equal(members.Select(m => m.Name), $"the C# mirror of {cStruct} must have the same fields in the same order");
        foreach (var (name, bitOffset) in members)
        {
            ((int)Marshal.OffsetOf<T>(name) * 8).Should().Be(bitOffset, $"offset of {cStruct}.{name}");
        }
        // No implicit padding: the members' sizes add up to the struct's (flowsec.h's rule).
        int sum = typeof(T).GetFields(BindingFlags.Public | BindingFlags.Instance).Sum(FieldSize);
        sum.Should().Be(size, $"struct {cStruct} must have no implicit padding");
    }

    /// <summary>The text of bpf/flowsec.h.</summary>
    public static string Header() => File.ReadAllText(Path.Combine(RepoRoot(), "bpf", "flowsec.h"));

    /// <summary>The value of enumerator (or, with <paramref name="define"/>, #define) <paramref name="name"/> in flowsec.h.</summary>
    public static long Value(string header, string name, bool define = false)
    {
        var m = Regex.Match(header, define ? $@"#define\s+{name}\s+(\d+)" : $@"\b{name}\s*=\s*(\d+)");
        m.Success.Should().BeTrue($"{name} must be defined in flowsec.h");
        return long.Parse(m.Groups[1].Value);
    }

    private static int FieldSize(FieldInfo f)
    {
        var fixedBuffer = f.GetCustomAttribute<FixedBufferAttribute>();
        return fixedBuffer is not null ? fixedBuffer.Length * Marshal.SizeOf(fixedBuffer.ElementType) : Marshal.SizeOf(f.FieldType);
    }

    private static string RepoRoot([CallerFilePath] string thisFile = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(thisFile)!, "..", "..", "..", ".."));
}
