using FlowSec.Sensor.Attribution;

namespace FlowSec.Tests.Sensor.Attribution;

public sealed class WorkloadNamerTests
{
    private const string Id = "3f1c2b9a8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b";

    [Theory]
    [InlineData("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f3a1c2e_4b5d_6e7f_8091_a2b3c4d5e6f7.slice/cri-containerd-" + Id + ".scope",
        "0f3a1c2e-4b5d-6e7f-8091-a2b3c4d5e6f7")]
    [InlineData("/kubepods/besteffort/pod0f3a1c2e-4b5d-6e7f-8091-a2b3c4d5e6f7/" + Id, "0f3a1c2e-4b5d-6e7f-8091-a2b3c4d5e6f7")]
    [InlineData("/system.slice/docker-" + Id + ".scope", "")]
    [InlineData("/docker/" + Id, "")]
    [InlineData("/machine.slice/crio-" + Id + ".scope", "")]
    public void Container_runtime_paths_give_container_id_and_pod_uid(string path, string podUid)
    {
        var identity = WorkloadNamer.FromCgroupPath(path)!;
        identity.ContainerId.Should().Be(Id);
        identity.PodUid.Should().Be(podUid);
        identity.Workload.Should().Be(Id[..12]);
    }

    [Theory]
    [InlineData("/flowsec-test-ab12/podA", "podA")]
    [InlineData("/system.slice/nginx.service", "nginx")]
    [InlineData("/user.slice/user-0.slice/session-3.scope", "session-3")]
    public void Other_cgroups_are_named_by_their_directory(string path, string workload)
    {
        var identity = WorkloadNamer.FromCgroupPath(path)!;
        identity.Workload.Should().Be(workload);
        identity.ContainerId.Should().BeEmpty();
    }

    [Theory]
    [InlineData("/")]
    [InlineData("")]
    [InlineData(null)]
    public void The_root_cgroup_is_the_host(string? path) => WorkloadNamer.FromCgroupPath(path).Should().BeNull();

    [Fact]
    public void Resolver_maps_a_real_cgroup_directory_inode_to_its_path()
    {
        var root = CgroupResolver.DefaultRoot;
        var dir = Path.Combine(root, "flowsec-resolver-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            var resolver = new CgroupResolver(root);
            resolver.PathOf(CgroupResolver.Inode(dir)).Should().Be(dir[root.Length..]);
            resolver.PathOf(CgroupResolver.Inode(root)).Should().Be("/");
        }
        finally
        {
            Directory.Delete(dir);
        }
    }
}
