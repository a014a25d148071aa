using System.Collections.Frozen;
using System.Runtime.InteropServices;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// Names of the kernel's packet drop reasons (<c>enum skb_drop_reason</c>), read from the running
/// kernel's BTF: the numbering changes between kernel versions (reasons are inserted in the
/// middle), so a table compiled into the sensor would name drops wrongly on other kernels.
/// Names lose the <c>SKB_DROP_REASON_</c> prefix, as the kfree_skb tracepoint prints them
/// (<c>NETFILTER_DROP</c>, <c>NO_SOCKET</c>, ...).
/// </summary>
internal sealed class DropReasons
{
    private const string EnumName = "skb_drop_reason";
    private const string SubsystemEnumName = "skb_drop_reason_subsys";
    private const string Prefix = "SKB_DROP_REASON_";
    private const string SubsystemPrefix = "SKB_DROP_REASON_SUBSYS_";
    // Reasons of subsystems (mac80211, openvswitch) carry the subsystem in the upper 16 bits.
    private const int SubsystemShift = 16;

    private readonly FrozenDictionary<uint, string> _names;
    private readonly FrozenDictionary<uint, string> _subsystems;

    /// <summary>Creates the table from enumerator names and values as BTF lists them.</summary>
    internal DropReasons(IEnumerable<KeyValuePair<string, long>> reasons, IEnumerable<KeyValuePair<string, long>>? subsystems = null)
    {
        _names = Trim(reasons, Prefix);
        _subsystems = Trim(subsystems ?? [], SubsystemPrefix);
    }

    /// <summary>Reason code → name, for every reason the kernel defines.</summary>
    public IReadOnlyDictionary<uint, string> Names => _names;

    /// <summary>The code of <paramref name="name"/> (without prefix), or null when the kernel has no such reason.</summary>
    public uint? Code(string name) => _names.FirstOrDefault(kv => kv.Value == name) is { Value: not null } kv ? kv.Key : null;

    /// <summary>
    /// The name of <paramref name="code"/>; codes the table lacks read as
    /// <c>&lt;SUBSYSTEM&gt;_&lt;n&gt;</c> for subsystem reasons, else <c>UNKNOWN_&lt;code&gt;</c>.
    /// </summary>
    public string Name(uint code)
    {
        if (_names.TryGetValue(code, out var name))
        {
            return name;
        }
        uint subsystem = code >> SubsystemShift;
        if (subsystem != 0)
        {
            string prefix = _subsystems.TryGetValue(subsystem, out var s) ? s : $"SUBSYS{subsystem}";
            return $"{prefix}_{code & 0xffff}";
        }
        return $"UNKNOWN_{code}";
    }

    /// <summary>
    /// Reads the enums from the running kernel's BTF through libbpf. Throws
    /// <see cref="BpfException"/> when the kernel has no BTF or no drop reasons (before 5.17).
    /// </summary>
    public static DropReasons FromKernel()
    {
        nint btf = Libbpf.CheckPointer(LibbpfMaps.BtfLoadVmlinux(), "loading the kernel's BTF");
        try
        {
            var reasons = ReadEnum(btf, EnumName)
                ?? throw new BpfException($"enum {EnumName} in the kernel's BTF (drop reasons need Linux 5.17+)", 2 /* ENOENT */);
            return new DropReasons(reasons, ReadEnum(btf, SubsystemEnumName));
        }
        finally
        {
            LibbpfMaps.BtfFree(btf);
        }
    }

    private static unsafe List<KeyValuePair<string, long>>? ReadEnum(nint btf, string name)
    {
        int id = LibbpfMaps.BtfFindByNameKind(btf, name, LibbpfMaps.BtfKindEnum);
        if (id <= 0)
        {
            return null;
        }
        LibbpfMaps.BtfType* type = LibbpfMaps.BtfTypeById(btf, (uint)id);
        if (type == null || type->Kind != LibbpfMaps.BtfKindEnum)
        {
            return null;
        }
        // The enumerators follow the btf_type header directly.
        var members = new ReadOnlySpan<LibbpfMaps.BtfEnum>(type + 1, type->VLen);
        var result = new List<KeyValuePair<string, long>>(members.Length);
        foreach (var member in members)
        {
            string? memberName = Marshal.PtrToStringUTF8((nint)LibbpfMaps.BtfNameByOffset(btf, member.NameOffset));
            if (!string.IsNullOrEmpty(memberName))
            {
                // Unsigned enum: a value past int.MaxValue reads negative here.
                result.Add(new(memberName, (uint)member.Value));
            }
        }
        return result;
    }

    private static FrozenDictionary<uint, string> Trim(IEnumerable<KeyValuePair<string, long>> members, string prefix)
    {
        var names = new Dictionary<uint, string>();
        foreach (var (name, value) in members)
        {
            // SKB_NOT_DROPPED_YET and SKB_CONSUMED have no SKB_DROP_REASON_ prefix; the tracepoint drops "SKB_".
            string trimmed = name.StartsWith(prefix, StringComparison.Ordinal) ? name[prefix.Length..]
                : name.StartsWith("SKB_", StringComparison.Ordinal) ? name[4..] : name;
            // Aliases (e.g. a MAX marker) share a value; the first name wins, as in the kernel's table.
            names.TryAdd((uint)value, trimmed);
        }
        return names.ToFrozenDictionary();
    }
}
