using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor.Udp;

/// <summary>
/// bpf/flowsec.h is the source of truth for the UDP flow and drop map layouts: the C# mirrors
/// must match the BTF of the objects the sensor embeds, and the header's enums.
/// </summary>
public class UdpDropLayoutTests
{
    [Fact]
    public void Udp_flow_key_and_stats_match_the_btf_of_the_embedded_object()
    {
        string btf = KernelLayoutTests.DumpEmbeddedObjectBtf(UdpFlowCapture.ObjectName);

        BtfLayout.AssertMatches<FsUdpFlowKey>(btf, "fs_udp_flow_key", 48);
        BtfLayout.AssertMatches<FsUdpFlowStats>(btf, "fs_udp_flow_stats", 56);
    }

    [Fact]
    public void Drop_key_and_stats_match_the_btf_of_the_embedded_object()
    {
        string btf = KernelLayoutTests.DumpEmbeddedObjectBtf(DropCapture.ObjectName);

        BtfLayout.AssertMatches<FsDropKey>(btf, "fs_drop_key", 56);
        BtfLayout.AssertMatches<FsDropStats>(btf, "fs_drop_stats", 48);
    }

    [Fact]
    public void Directions_and_counter_indexes_match_flowsec_h()
    {
        BtfLayout.HeaderValue("FS_FLOW_DIR_EGRESS").Should().Be((long)FlowDir.Egress);
        BtfLayout.HeaderValue("FS_FLOW_DIR_INGRESS").Should().Be((long)FlowDir.Ingress);
        BtfLayout.HeaderValue("FS_UDP_COUNTER_INSERTS").Should().Be((long)UdpCounter.Inserts);
        BtfLayout.HeaderValue("FS_UDP_COUNTER_INSERT_FAILED").Should().Be((long)UdpCounter.InsertFailed);
        BtfLayout.HeaderValue("FS_UDP_COUNTER_UNPARSED").Should().Be((long)UdpCounter.Unparsed);
        BtfLayout.HeaderValue("FS_DROP_COUNTER_SEEN").Should().Be((long)DropCounter.Seen);
        BtfLayout.HeaderValue("FS_DROP_COUNTER_INSERTS").Should().Be((long)DropCounter.Inserts);
        BtfLayout.HeaderValue("FS_DROP_COUNTER_INSERT_FAILED").Should().Be((long)DropCounter.InsertFailed);
        BtfLayout.HeaderValue("FS_DROP_COUNTER_NON_IP").Should().Be((long)DropCounter.NonIp);
    }
}
