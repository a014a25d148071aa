using System.Diagnostics;
using FlowSec.Api.V1;
using FlowSec.Sensor.Attribution;

namespace FlowSec.Benchmarks;

/// <summary>
/// What scoping a sensor to a cgroup subtree costs per event: the whole host (no check), an event
/// of the node, an event of another node (answered from the remembered outside ids). Run as root:
/// it creates throw-away cgroup directories.
/// </summary>
public static class ScopeCost
{
    /// <summary>Measures <paramref name="events"/> admissions per case and prints ns/event.</summary>
    public static void Run(int events)
    {
        var root = CgroupResolver.DefaultRoot;
        var dir = Path.Combine(root, $"flowsec-bench-scope-{Environment.ProcessId}");
        var dirs = new List<string>();
        try
        {
            // A node with 20 pods, and 200 cgroups of other nodes.
            for (var i = 0; i < 20; i++)
            {
                dirs.Add(Directory.CreateDirectory(Path.Combine(dir, "node", $"pod-{i}")).FullName);
            }
            for (var i = 0; i < 200; i++)
            {
                dirs.Add(Directory.CreateDirectory(Path.Combine(dir, "other", $"pod-{i}")).FullName);
            }
            var scope = CgroupScope.For(Path.Combine(dir, "node"), root);
            var inside = dirs.Take(20).Select(CgroupResolver.Inode).Select(Flow).ToArray();
            var outside = dirs.Skip(20).Select(CgroupResolver.Inode).Select(Flow).ToArray();

            Console.WriteLine($"scope check, {events:N0} events per case (ns/event, best of 3)");
            Console.WriteLine($"  whole host (unscoped)   {Measure(CgroupScope.Host, inside, events),6:0.0}");
            Console.WriteLine($"  event of this node      {Measure(scope, inside, events),6:0.0}");
            Console.WriteLine($"  event of another node   {Measure(scope, outside, events),6:0.0}");
            Console.WriteLine($"  skipped so far: {scope.Skipped:N0}");
        }
        finally
        {
            foreach (var d in dirs.Append(Path.Combine(dir, "node")).Append(Path.Combine(dir, "other")).Append(dir))
            {
                Directory.Delete(d);
            }
        }
    }

    private static double Measure(CgroupScope scope, Event[] sample, int events)
    {
        var best = double.MaxValue;
        for (var round = 0; round < 3; round++)
        {
            var admitted = 0;
            var watch = Stopwatch.StartNew();
            for (var i = 0; i < events; i++)
            {
                admitted += scope.Admits(sample[i % sample.Length]) ? 1 : 0;
            }
            best = Math.Min(best, watch.Elapsed.TotalNanoseconds / events);
            GC.KeepAlive(admitted);
        }
        return best;
    }

    // An egress flow whose local (source) side is in the given cgroup.
    private static Event Flow(ulong cgroupId) => new()
    {
        Type = EventType.Flow,
        Source = new Endpoint { CgroupId = cgroupId },
        Destination = new Endpoint(),
    };
}
