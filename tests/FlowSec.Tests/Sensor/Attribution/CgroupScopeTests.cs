using System.Diagnostics;
using FlowSec.Api.V1;
using FlowSec.Sensor.Attribution;
using FlowSec.Tests.Integration;

namespace FlowSec.Tests.Sensor.Attribution;

/// <summary>A sensor scoped to a cgroup subtree speaks for that subtree, on the real cgroup v2 hierarchy.</summary>
public sealed class CgroupScopeTests : IDisposable
{
    private readonly string _dir = Path.Combine(TestTopology.CgroupRoot, $"flowsec-scope-{Guid.NewGuid():N}"[..24]);

    public CgroupScopeTests()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "node-a", "pod-1"));
        Directory.CreateDirectory(Path.Combine(_dir, "node-b"));
    }

    [Fact]
    public void The_subtree_is_in_scope_and_its_siblings_are_not()
    {
        var scope = CgroupScope.For(Path.Combine(_dir, "node-a"), TestTopology.CgroupRoot);

        scope.IsScoped.Should().BeTrue();
        scope.Contains(Id("node-a")).Should().BeTrue();
        scope.Contains(Id("node-a/pod-1")).Should().BeTrue();
        scope.Contains(Id("node-b")).Should().BeFalse();
        scope.Contains(Id("")).Should().BeFalse("the parent is not part of the node");
        scope.Contains(0).Should().BeFalse();
    }

    [Fact]
    public void A_cgroup_created_after_start_joins_the_scope()
    {
        var scope = CgroupScope.For(Path.Combine(_dir, "node-a"), TestTopology.CgroupRoot);
        Directory.CreateDirectory(Path.Combine(_dir, "node-a", "pod-2"));
        var id = Id("node-a/pod-2");

        scope.Contains(Id("node-b")).Should().BeFalse("an outside id, answered right before the new one");
        scope.Contains(id).Should().BeTrue("the first event of a new pod already belongs to the node");
    }

    [Fact]
    public void Events_are_admitted_by_either_endpoint_and_the_rest_are_counted()
    {
        var scope = CgroupScope.For(Path.Combine(_dir, "node-a"), TestTopology.CgroupRoot);
        var inside = Id("node-a/pod-1");
        var outside = Id("node-b");

        scope.Admits(Flow(source: inside, destination: 0)).Should().BeTrue();
        scope.Admits(Flow(source: 0, destination: inside)).Should().BeTrue("an ingress flow's local side is the destination");
        scope.Admits(Flow(source: outside, destination: 0)).Should().BeFalse();
        scope.Admits(Flow(source: 0, destination: 0)).Should().BeFalse("nothing ties it to this node");
        scope.Skipped.Should().Be(2);
    }

    [Fact]
    public async Task Events_without_a_cgroup_belong_to_the_network_namespaces_of_the_subtree()
    {
        var ns = $"fsscope{Random.Shared.Next(0x1000, 0xffff):x}";
        await TestTopology.Sh($"ip netns add {ns}");
        using var sleeper = new Process
        {
            StartInfo = new ProcessStartInfo("sh", ["-c", $"echo $$ > '{_dir}/node-a/pod-1/cgroup.procs' && exec ip netns exec {ns} sleep 60"]),
        };
        try
        {
            sleeper.Start();
            var netns = await WaitForNetnsAsync(sleeper.Id, ns);
            var scope = CgroupScope.For(Path.Combine(_dir, "node-a"), TestTopology.CgroupRoot);
            var other = CgroupScope.For(Path.Combine(_dir, "node-b"), TestTopology.CgroupRoot);

            scope.Admits(Flow(0, 0), netns).Should().BeTrue();
            other.Admits(Flow(0, 0), netns).Should().BeFalse();
            scope.Admits(Flow(0, 0), (uint)CgroupResolver.Inode("/proc/self/ns/net")).Should().BeFalse("the host namespace holds no process of the node");
        }
        finally
        {
            sleeper.Kill(entireProcessTree: true);
            await sleeper.WaitForExitAsync();
            await TestTopology.Sh($"ip netns del {ns}");
        }
    }

    [Fact]
    public void The_whole_host_admits_everything()
    {
        CgroupScope.For("", TestTopology.CgroupRoot).Should().BeSameAs(CgroupScope.Host);
        CgroupScope.For(TestTopology.CgroupRoot, TestTopology.CgroupRoot).IsScoped.Should().BeFalse();
        CgroupScope.Host.Admits(Flow(0, 0)).Should().BeTrue();
    }

    [Theory]
    [InlineData("/tmp", "not inside the cgroup v2 hierarchy")]
    [InlineData("no-such-cgroup-dir", "not a cgroup v2 directory")]
    [InlineData("../../etc", "not inside the cgroup v2 hierarchy")]
    public void A_bad_scope_is_refused_with_a_reason(string cgroup, string reason)
    {
        var act = () => CgroupScope.For(cgroup, TestTopology.CgroupRoot);
        act.Should().Throw<ArgumentException>().WithMessage($"*{reason}*");
    }

    private ulong Id(string relative) => CgroupResolver.Inode(Path.Combine(_dir, relative));

    private static Event Flow(ulong source, ulong destination) => new()
    {
        Type = EventType.Flow,
        Source = new Endpoint { CgroupId = source },
        Destination = new Endpoint { CgroupId = destination },
    };

    private static async Task<uint> WaitForNetnsAsync(int pid, string ns)
    {
        var expected = CgroupResolver.Inode($"/run/netns/{ns}");
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(10))
        {
            // The shell execs `ip netns exec`, which enters the namespace, then execs sleep.
            if (CgroupResolver.Inode($"/proc/{pid}/ns/net") == expected && File.ReadAllText($"/proc/{pid}/comm").Trim() == "sleep")
            {
                return (uint)expected;
            }
            await Task.Delay(20);
        }
        throw new TimeoutException($"process {pid} did not enter netns {ns}");
    }

    public void Dispose()
    {
        foreach (var dir in new[] { "node-a/pod-2", "node-a/pod-1", "node-a", "node-b", "" })
        {
            var path = Path.Combine(_dir, dir);
            for (var attempt = 0; attempt < 50 && Directory.Exists(path); attempt++)
            {
                try
                {
                    Directory.Delete(path);
                }
                catch (IOException)
                {
                    Thread.Sleep(100); // a killed process leaves its cgroup a moment later
                }
            }
        }
    }
}
