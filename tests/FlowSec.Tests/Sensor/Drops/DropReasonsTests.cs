using System.Text.RegularExpressions;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor.Drops;

/// <summary>Drop reason names come from the running kernel's BTF and agree with what the kernel itself prints.</summary>
public class DropReasonsTests
{
    [Fact]
    public void Names_from_btf_agree_with_the_kfree_skb_tracepoint_format_of_the_running_kernel()
    {
        var reasons = DropReasons.FromKernel();
        // The tracepoint's print format carries the kernel's own code → name table.
        string format = File.ReadAllText(TracepointFormat());
        var printed = Regex.Matches(format, @"\{ (\d+), ""(\w+)"" \}")
            .ToDictionary(m => uint.Parse(m.Groups[1].Value), m => m.Groups[2].Value);

        printed.Should().NotBeEmpty();
        foreach (var (code, name) in printed)
        {
            reasons.Name(code).Should().Be(name, $"code {code}");
        }
        reasons.Code("NETFILTER_DROP").Should().Be(printed.Single(p => p.Value == "NETFILTER_DROP").Key);
        reasons.Code("NOT_SPECIFIED").Should().NotBeNull();
        reasons.Names.Count.Should().BeGreaterThanOrEqualTo(printed.Count);
    }

    [Fact]
    public void Names_from_btf_agree_with_bpftool()
    {
        var reasons = DropReasons.FromKernel();
        string btf = KernelLayoutTests.Run("bpftool", "btf dump file /sys/kernel/btf/vmlinux");
        int start = btf.IndexOf("ENUM 'skb_drop_reason' ", StringComparison.Ordinal);
        start.Should().BeGreaterThan(0);
        int count = int.Parse(Regex.Match(btf[start..], @"vlen=(\d+)").Groups[1].Value);
        var members = Regex.Matches(btf[start..], @"\n\s+'(\w+)' val=(\d+)").Take(count).ToList();

        members.Should().HaveCount(count);
        foreach (var m in members)
        {
            string expected = Regex.Replace(m.Groups[1].Value, "^SKB_(DROP_REASON_)?", "");
            uint code = uint.Parse(m.Groups[2].Value);
            // Aliases share a value; the first name listed is the one used.
            if (members.First(x => x.Groups[2].Value == m.Groups[2].Value) == m)
            {
                reasons.Name(code).Should().Be(expected);
            }
        }
    }

    [Fact]
    public void Unknown_codes_get_stable_names()
    {
        var reasons = new DropReasons(
            [new("SKB_NOT_DROPPED_YET", 0), new("SKB_CONSUMED", 1), new("SKB_DROP_REASON_NOT_SPECIFIED", 2), new("SKB_DROP_REASON_NETFILTER_DROP", 12)],
            [new("SKB_DROP_REASON_SUBSYS_CORE", 0), new("SKB_DROP_REASON_SUBSYS_OPENVSWITCH", 3)]);

        reasons.Name(12).Should().Be("NETFILTER_DROP");
        reasons.Name(1).Should().Be("CONSUMED");
        reasons.Name(0).Should().Be("NOT_DROPPED_YET");
        reasons.Name(999).Should().Be("UNKNOWN_999");
        reasons.Name((3u << 16) | 2).Should().Be("OPENVSWITCH_2");
        reasons.Name((7u << 16) | 1).Should().Be("SUBSYS7_1");
        reasons.Code("NETFILTER_DROP").Should().Be(12);
        reasons.Code("NO_SUCH_REASON").Should().BeNull();
    }

    private static string TracepointFormat() =>
        new[] { "/sys/kernel/tracing", "/sys/kernel/debug/tracing" }
            .Select(root => Path.Combine(root, "events/skb/kfree_skb/format"))
            .FirstOrDefault(File.Exists)
        ?? throw new Xunit.Sdk.XunitException("tracefs is not mounted: no kfree_skb format to compare with");
}
