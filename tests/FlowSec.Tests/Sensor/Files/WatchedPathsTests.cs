using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor.Files;

public class WatchedPathsTests
{
    [Theory]
    [InlineData("/etc", true)]
    [InlineData("/etc/", true)]
    [InlineData("/etc/shadow", true)]
    [InlineData("/etc/ssh/sshd_config", true)]
    [InlineData("/etcetera", false)]
    [InlineData("/et", false)]
    [InlineData("/", false)]
    [InlineData("/home", false)]
    [InlineData("/home/alice/.ssh/id_ed25519", true)]
    [InlineData("/etc/ld.so.cache", false)]
    [InlineData("/etc/ld.so.cache.d/x", true)]
    [InlineData("/var/run/secrets/kubernetes.io/serviceaccount/token", true)]
    [InlineData("/var/run/other", false)]
    public void Prefixes_match_per_component_and_the_longest_entry_decides(string path, bool watched)
    {
        var set = WatchedPaths.Create(["/etc", "/home/", "/var/run/secrets"], ["/etc/ld.so.cache"]);

        set.IsWatched(path).Should().Be(watched);
    }

    [Fact]
    public void A_watched_prefix_inside_an_excluded_one_is_watched()
    {
        var set = WatchedPaths.Create(["/var/lib/app/keys"], ["/var"]);

        set.IsWatched("/var/lib/app/keys/k1").Should().BeTrue();
        set.IsWatched("/var/lib/app/other").Should().BeFalse();
    }

    [Fact]
    public void The_same_prefix_watched_and_excluded_is_excluded_and_root_watches_everything()
    {
        WatchedPaths.Create(["/etc"], ["/etc"]).IsWatched("/etc/passwd").Should().BeFalse();
        WatchedPaths.Create(["/"], []).IsWatched("/anything/at/all").Should().BeTrue();
    }

    [Theory]
    [InlineData("/etc/ld.so.cache", 1 /* open */, false)]
    [InlineData("/etc/ld.so.cache", 3 /* write */, true)]
    [InlineData("/etc/ld.so.cache", 2 /* create */, true)]
    [InlineData("/etc/ld.so.cache", 4 /* unlink */, true)]
    [InlineData("/etc/ld.so.cache", 5 /* rename */, true)]
    [InlineData("/etc/shadow", 1 /* open */, true)]
    [InlineData("/etc/shadow", 3 /* write */, true)]
    [InlineData("/etc/ssh/moduli", 1 /* open */, false)]
    [InlineData("/etc/ssh/moduli", 3 /* write */, false)]
    public void Changes_only_prefixes_report_changes_but_not_reads(string path, int op, bool watched)
    {
        var set = WatchedPaths.Create(["/etc"], ["/etc/ssh/moduli"], ["/etc/ld.so.cache", "/etc/ssh/moduli"]);

        set.IsWatched(path, (FileOp)op).Should().Be(watched);
    }

    [Fact]
    public void For_the_same_key_exclusion_beats_changes_only_which_beats_watch()
    {
        var set = WatchedPaths.Create(["/a", "/b"], ["/a"], ["/a", "/b"]);

        set.Entries.Where(e => e.Key.StartsWith("/a")).Should().OnlyContain(e => e.Watch == FileWatch.Ignore);
        set.Entries.Where(e => e.Key.StartsWith("/b")).Should().OnlyContain(e => e.Watch == FileWatch.Changes);
    }

    [Theory]
    [InlineData("/etc/./shadow", "/etc/shadow")]
    [InlineData("//etc//shadow", "/etc/shadow")]
    [InlineData("/tmp/../etc/shadow", "/etc/shadow")]
    [InlineData("/../../etc/shadow", "/etc/shadow")]
    [InlineData("/etc/ssl/certs/..", "/etc/ssl")]
    [InlineData("/etc/.", "/etc")]
    [InlineData("/home/a/.ssh", "/home/a/.ssh")]
    [InlineData("/", "/")]
    [InlineData("relative/x", "relative/x")]
    public void Normalize_resolves_dot_segments_lexically(string path, string normalized)
    {
        WatchedPaths.Normalize(path).Should().Be(normalized);
    }

    [Fact]
    public unsafe void Kernel_keys_cover_the_nul_for_exact_entries()
    {
        var set = WatchedPaths.Create(["/etc", "/home/"], []);

        set.Entries.Should().BeEquivalentTo(new[]
        {
            new WatchedPaths.Entry("/etc", true, FileWatch.Report),
            new WatchedPaths.Entry("/etc/", false, FileWatch.Report),
            new WatchedPaths.Entry("/home/", false, FileWatch.Report),
        });
        FsPathKey exact = WatchedPaths.ToKey(set.Entries.Single(e => e.Exact));
        exact.prefixlen.Should().Be(5 * 8);
        new ReadOnlySpan<byte>(exact.path, 6).ToArray().Should().Equal((byte)'/', (byte)'e', (byte)'t', (byte)'c', 0, 0);
        FsPathKey dir = WatchedPaths.ToKey(set.Entries.Single(e => e.Key == "/etc/"));
        dir.prefixlen.Should().Be(5 * 8);
    }

    [Theory]
    [InlineData("")]
    [InlineData("etc")]
    [InlineData("./etc")]
    [InlineData("/a\0b")]
    public void Prefixes_that_are_not_absolute_paths_are_rejected(string prefix)
    {
        var act = () => WatchedPaths.Create([prefix], []);

        act.Should().Throw<ArgumentException>().WithMessage("*must be an absolute path*");
    }

    [Fact]
    public void Prefixes_longer_than_a_key_are_rejected()
    {
        var act = () => WatchedPaths.Create([], ["/" + new string('x', 254)]);

        act.Should().Throw<ArgumentException>().WithMessage("*longer than 254 bytes*");
    }
}
