using System.Text;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor;

public sealed class CommNamesTests
{
    private static byte[] Comm(string name)
    {
        var bytes = new byte[16];
        Encoding.UTF8.GetBytes(name).AsSpan(0, Math.Min(16, Encoding.UTF8.GetByteCount(name))).CopyTo(bytes);
        return bytes;
    }

    [Fact]
    public void Names_end_at_the_first_NUL_and_repeat_as_the_same_string()
    {
        var first = CommNames.Get(Comm("nginx"));
        first.Should().Be("nginx");
        CommNames.Get(Comm("nginx")).Should().BeSameAs(first);
        CommNames.Get(Comm("wrk")).Should().Be("wrk");
        CommNames.Get(new byte[16]).Should().Be("");
    }

    [Fact]
    public void A_name_that_fills_all_16_bytes_is_kept_whole()
    {
        CommNames.Get(Encoding.ASCII.GetBytes("0123456789abcdef")).Should().Be("0123456789abcdef");
    }

    [Fact]
    public void Bytes_after_the_NUL_still_tell_names_apart_without_changing_them()
    {
        var a = Comm("sh");
        var b = Comm("sh");
        b[10] = (byte)'x'; // stale bytes past the NUL
        CommNames.Get(a).Should().Be("sh");
        CommNames.Get(b).Should().Be("sh");
    }
}
