using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace FlowSec.Tests.Sensor;

/// <summary>
/// bpf/flowsec.h is the source of truth for kernel-to-user layouts: compares a C# mirror struct
/// with a struct in the BTF of an embedded BPF object (bpftool's raw dump, see
/// <see cref="KernelLayoutTests.DumpEmbeddedObjectBtf"/>), and reads enum values and defines out of the header.
/// </summary>
internal static class BtfLayout
{
    /// <summary>
    /// Asserts that struct <paramref name="cStruct"/> is <paramref name="expectedSize"/> bytes and that
    /// <typeparamref name="T"/> has its size and the same fields, in the same order, at the same offsets.
    /// </summary>
    public static void AssertMatches<T>(string btf, string cStruct, int expectedSize)
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
    }

    /// <summary>Asserts that the fields of <typeparamref name="T"/> add up to its size (flowsec.h's rule: no implicit padding).</summary>
    public static void AssertNoImplicitPadding<T>(string cStruct)
    {
        int sum = typeof(T).GetFields(BindingFlags.Public | BindingFlags.Instance).Sum(FieldSize);
        sum.Should().Be(Marshal.SizeOf<T>(), $"struct {cStruct} must have no implicit padding");
    }

    /// <summary>The value of enumerator (or, with <paramref name="define"/>, #define) <paramref name="name"/> in bpf/flowsec.h.</summary>
    public static long HeaderValue(string name, bool define = false)
    {
        string header = File.ReadAllText(Path.Combine(RepoRoot(), "bpf", "flowsec.h"));
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
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(thisFile)!, "..", "..", ".."));
}
