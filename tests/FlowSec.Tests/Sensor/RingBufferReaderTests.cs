using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor;

public sealed class RingBufferReaderTests
{
    [Fact]
    public void Idle_rings_back_off_to_the_cap_and_return_to_the_interval_when_records_come()
    {
        var timeouts = new List<int>();
        int t = 5;
        for (int i = 0; i < 6; i++)
        {
            t = RingBufferReader.NextTimeout(5, t, gotRecords: false);
            timeouts.Add(t);
        }
        timeouts.Should().Equal(10, 20, 40, RingBufferReader.MaxIdleDrainMs, RingBufferReader.MaxIdleDrainMs, RingBufferReader.MaxIdleDrainMs);
        RingBufferReader.NextTimeout(5, t, gotRecords: true).Should().Be(5);
    }

    [Fact]
    public void An_interval_longer_than_the_idle_cap_is_kept()
    {
        RingBufferReader.NextTimeout(200, 200, gotRecords: false).Should().Be(200);
    }
}
