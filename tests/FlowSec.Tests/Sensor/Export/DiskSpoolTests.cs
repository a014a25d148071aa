using FlowSec.Api.V1;
using FlowSec.Sensor.Export;

namespace FlowSec.Tests.Sensor.Export;

public sealed class DiskSpoolTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("flowsec-spool-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static EventBatch Batch(ulong id, int events)
    {
        var batch = new EventBatch { Node = "n", BatchId = id };
        for (var i = 0; i < events; i++)
        {
            batch.Events.Add(new Event { Node = "n", TimeUnixNano = (ulong)i, Source = new Endpoint { Process = new string('x', 100) } });
        }
        return batch;
    }

    [Fact]
    public void Batches_come_back_oldest_first_and_survive_a_restart()
    {
        var spool = new DiskSpool(_dir, 1 << 20);
        spool.Append(Batch(1, 3));
        spool.Append(Batch(2, 4));

        var reopened = new DiskSpool(_dir, 1 << 20);
        reopened.Events.Should().Be(7);
        var ids = reopened.Sequences().Select(s => reopened.Read(s)!.BatchId).ToList();
        ids.Should().Equal(1ul, 2ul);

        reopened.Remove(reopened.Sequences()[0]);
        new DiskSpool(_dir, 1 << 20).Sequences().Select(s => new DiskSpool(_dir, 1 << 20).Read(s)!.BatchId).Should().Equal(2ul);
    }

    [Fact]
    public void When_full_the_oldest_batches_are_dropped_and_counted()
    {
        var one = Batch(0, 10).CalculateSize();
        var spool = new DiskSpool(_dir, one * 3 + 10);
        for (ulong id = 1; id <= 5; id++)
        {
            spool.Append(Batch(id, 10));
        }
        spool.Batches.Should().Be(3);
        spool.DroppedEvents.Should().Be(20);
        spool.Bytes.Should().BeLessThanOrEqualTo(one * 3 + 10);
        spool.Sequences().Select(s => spool.Read(s)!.BatchId).Should().Equal(3ul, 4ul, 5ul);
    }

    [Fact]
    public void A_corrupt_file_is_skipped_counted_and_removed()
    {
        var spool = new DiskSpool(_dir, 1 << 20);
        spool.Append(Batch(1, 2));
        spool.Append(Batch(2, 2));
        var first = Directory.GetFiles(_dir, "*.batch").Order().First();
        File.WriteAllBytes(first, [0xff, 0xff, 0xff]);

        var reopened = new DiskSpool(_dir, 1 << 20);
        reopened.Sequences().Select(reopened.Read).Where(b => b is not null).Select(b => b!.BatchId).Should().Equal(2ul);
        reopened.CorruptFiles.Should().Be(1);
        reopened.DroppedEvents.Should().Be(2);
        Directory.GetFiles(_dir, "*.batch").Should().ContainSingle();
    }
}
