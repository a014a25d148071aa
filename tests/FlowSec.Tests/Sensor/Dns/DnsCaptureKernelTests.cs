using System.Diagnostics;
using System.Net;
using System.Text.Json;
using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Dns;
using FlowSec.Sensor.Export;
using FlowSec.Tests.Integration;
using Microsoft.Extensions.Options;
using Xunit.Abstractions;

namespace FlowSec.Tests.Sensor.Dns;

/// <summary>
/// Against the real kernel: two test pods (network namespace + cgroup each), dnsmasq serving a
/// test zone in one, dig in the other, the DNS capture attached to the pods' parent cgroup (or
/// to the root). Everything the tests create is torn down by <see cref="TestTopology"/>.
/// </summary>
[Collection(LibbpfCollection.Name)]
public sealed class DnsCaptureKernelTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task Dig_against_dnsmasq_becomes_dns_events_and_names()
    {
        await using var t = await TestTopology.CreateAsync("dns", "client");
        var server = t.Pods["dns"];
        var client = t.Pods["client"];
        string zoneAddress = ZoneAddress();
        // IPv6 on the same veths, to cover the programs' IPv6 path (nodad: usable at once).
        var server6 = IPAddress.Parse($"fd00:f5::{server.Address.GetAddressBytes()[3]}");
        var client6 = IPAddress.Parse($"fd00:f5::{client.Address.GetAddressBytes()[3]}");
        await TestTopology.Sh($"ip -n {server.Namespace} addr add {server6}/64 dev eth0 nodad && ip -n {client.Namespace} addr add {client6}/64 dev eth0 nodad");

        await using var run = await CaptureRun.StartAsync(output, Path.GetDirectoryName(server.CgroupPath)!);
        await StartDnsmasq(server, zoneAddress, server.Address, server6);

        var (code, answer, digPid) = await client.RunAsync(Timeout, "dig", "+tries=1", "+time=2", "+short", $"@{server.Address}", "web.flowsec.test", "A");
        code.Should().Be(0, answer);
        answer.Trim().Should().Be(zoneAddress);

        var e = await run.NextAsync(e => e.Dns.Query == "web.flowsec.test" && e.Dns.Qtype == "A" && Ip(e.Source).Equals(client.Address));
        output.WriteLine(e.ToString());
        e.Type.Should().Be(EventType.Dns);
        e.Dns.Rcode.Should().Be("NOERROR");
        e.Dns.IsResponse.Should().BeTrue();
        e.Dns.Answers.Should().ContainSingle().Which.Should().BeEquivalentTo(new { Name = "web.flowsec.test", Type = "A", Data = zoneAddress });
        e.Dns.LatencyUs.Should().BeGreaterThan(0).And.BeLessThan(2_000_000);
        Ip(e.Destination).Should().Be(server.Address);
        e.Destination.Port.Should().Be(53);
        e.Source.Port.Should().BeGreaterThan(0).And.NotBe(53);
        e.Source.Pid.Should().Be((uint)digPid, "the query was sent in dig's own context");
        e.Source.Process.Should().Be("dig");
        e.Source.CgroupId.Should().Be(client.CgroupId);
        e.Destination.Process.Should().Be("dnsmasq", "dnsmasq sent the response in its own context");
        e.Destination.Pid.Should().BeGreaterThan(0);
        e.Destination.CgroupId.Should().Be(server.CgroupId);
        long unixNow = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;
        ((long)e.TimeUnixNano).Should().BeCloseTo(unixNow, 10_000_000_000);
        run.Names.NamesFor(IPAddress.Parse(zoneAddress)).Should().Equal("web.flowsec.test");

        // A name in dnsmasq's local domain that it does not know: NXDOMAIN. Outside it, with no upstream: REFUSED.
        await client.RunAsync(Timeout, "dig", "+tries=1", "+time=2", $"@{server.Address}", "nothing.flowsec.test", "A");
        var nx = await run.NextAsync(e => e.Dns.Query == "nothing.flowsec.test");
        nx.Dns.Rcode.Should().Be("NXDOMAIN");
        nx.Dns.Answers.Should().BeEmpty();
        await client.RunAsync(Timeout, "dig", "+tries=1", "+time=2", $"@{server.Address}", "nope.example", "A");
        (await run.NextAsync(e => e.Dns.Query == "nope.example")).Dns.Rcode.Should().Be("REFUSED");

        // Over IPv6.
        (code, answer, _) = await client.RunAsync(Timeout, "dig", "+tries=1", "+time=2", "+short", $"@{server6}", "web.flowsec.test", "A");
        code.Should().Be(0, answer);
        var v6 = await run.NextAsync(e => e.Dns.Query == "web.flowsec.test" && Ip(e.Source).Equals(client6));
        Ip(v6.Destination).Should().Be(server6);
        v6.Dns.Answers.Single().Data.Should().Be(zoneAddress);
        v6.Source.Process.Should().Be("dig");

        // A server that does not answer (nothing listens on the client's own address): TIMEOUT after the timeout.
        await client.RunAsync(Timeout, "dig", "+tries=1", "+time=1", $"@{client.Address}", "silent.flowsec.test", "A");
        var timeout = await run.NextAsync(e => e.Dns.Query == "silent.flowsec.test");
        timeout.Dns.Rcode.Should().Be("TIMEOUT");
        timeout.Dns.IsResponse.Should().BeFalse();
        timeout.Source.Process.Should().Be("dig");

        var counters = run.Counters();
        output.WriteLine(string.Join(", ", counters.Select(c => $"{c.Key}={c.Value}")));
        counters["dns_records_malformed"].Should().Be(0);
        counters["dns_ringbuf_dropped"].Should().Be(0);
        counters["dns_handler_errors"].Should().Be(0);
        counters["dns_queries_unanswered"].Should().BeGreaterThanOrEqualTo(1);
        counters["dns_duplicate_sightings"].Should().BeGreaterThanOrEqualTo(4, "both pods are under the attach point: each message is seen twice");
    }

    [Fact]
    public async Task Attaches_to_the_cgroup_root_by_default_and_leaves_nothing_behind()
    {
        IReadOnlyList<uint> ours;
        List<CapturePath> status;
        string root;
        await using (var run = await CaptureRun.StartAsync(output, cgroupPath: null))
        {
            root = run.Capture.CgroupPath;
            root.Should().Be(TestTopology.CgroupRoot);
            ours = run.Capture.ProgramIds;
            status = run.Capture.CapturePaths().ToList();
            ours.Should().HaveCount(2).And.NotContain(0u);
            KernelProbe.CgroupProgramIds(root).Should().Contain(ours, "bpftool cgroup show must list both programs on the root");
        }

        status.Select(s => (s.Signal, s.Program, s.Path, s.State)).Should().BeEquivalentTo(new[]
        {
            ("dns", "dns_egress", $"cgroup_skb/egress on {root}", "active"),
            ("dns", "dns_ingress", $"cgroup_skb/ingress on {root}", "active"),
        });
        KernelProbe.CgroupProgramIds(root).Should().NotIntersectWith(ours);
        using var progs = JsonDocument.Parse(KernelLayoutTests.Run("bpftool", "-j prog show"));
        progs.RootElement.EnumerateArray().Select(p => p.GetProperty("id").GetUInt32()).Should().NotIntersectWith(ours);
    }

    [Fact]
    public async Task Missing_cgroup_is_reported_unavailable_without_stopping_the_host()
    {
        await using var run = await CaptureRun.StartAsync(output, "/sys/fs/cgroup/unified/flowsec-does-not-exist", expectActive: false);

        var path = run.Capture.CapturePaths().Should().ContainSingle().Subject;
        path.State.Should().Be("unavailable");
        path.Reason.Should().Contain("flowsec-does-not-exist");
    }

    [Fact]
    public async Task Forced_task_read_program_attributes_dig_to_its_pid_and_cgroup()
    {
        await using var t = await TestTopology.CreateAsync("dns", "client");
        var server = t.Pods["dns"];
        var client = t.Pods["client"];
        string zoneAddress = ZoneAddress();

        await using var run = await CaptureRun.StartAsync(output, Path.GetDirectoryName(server.CgroupPath)!, egressProgram: "task-read");
        run.Capture.CapturePaths().Select(p => (p.Program, p.State, p.Reason)).Should().BeEquivalentTo(new[]
        {
            ("dns_egress_task_read", "active", "forced by --Sensor:Dns:EgressProgram=task-read"),
            ("dns_ingress", "active", ""),
        }, "status names the egress program in use and why");
        await StartDnsmasq(server, zoneAddress, server.Address);

        var (code, answer, digPid) = await client.RunAsync(Timeout, "dig", "+tries=1", "+time=2", "+short", $"@{server.Address}", "web.flowsec.test", "A");
        code.Should().Be(0, answer);

        var e = await run.NextAsync(e => e.Dns.Query == "web.flowsec.test" && Ip(e.Source).Equals(client.Address));
        output.WriteLine(e.ToString());
        e.Dns.Answers.Single().Data.Should().Be(zoneAddress);
        e.Source.Pid.Should().Be((uint)digPid, "the query was sent in dig's own context, read from the task");
        e.Source.Process.Should().Be("dig");
        e.Source.CgroupId.Should().Be(client.CgroupId);
        e.Destination.Process.Should().Be("dnsmasq");
        e.Destination.CgroupId.Should().Be(server.CgroupId);
        run.Counters()["dns_records_malformed"].Should().Be(0);
    }

    [Fact]
    public async Task Dig_over_tcp_against_dnsmasq_becomes_a_tcp_dns_event()
    {
        await using var t = await TestTopology.CreateAsync("dns", "client");
        var server = t.Pods["dns"];
        var client = t.Pods["client"];
        string zoneAddress = ZoneAddress();

        await using var run = await CaptureRun.StartAsync(output, Path.GetDirectoryName(server.CgroupPath)!);
        await StartDnsmasq(server, zoneAddress, server.Address);

        var (code, answer, digPid) = await client.RunAsync(Timeout, "dig", "+tcp", "+tries=1", "+time=2", "+short", $"@{server.Address}", "web.flowsec.test", "A");
        code.Should().Be(0, answer);
        answer.Trim().Should().Be(zoneAddress);

        var e = await run.NextAsync(e => e.Dns.Query == "web.flowsec.test" && Ip(e.Source).Equals(client.Address));
        output.WriteLine(e.ToString());
        e.Dns.Transport.Should().Be("tcp");
        e.Dns.Rcode.Should().Be("NOERROR");
        e.Dns.IsResponse.Should().BeTrue();
        e.Dns.Answers.Single().Data.Should().Be(zoneAddress);
        e.Dns.LatencyUs.Should().BeGreaterThan(0);
        e.Destination.Port.Should().Be(53);
        e.Source.Pid.Should().Be((uint)digPid);
        e.Source.Process.Should().Be("dig");
        e.Source.CgroupId.Should().Be(client.CgroupId);
        e.Destination.Process.Should().Be("dnsmasq");
        e.Destination.CgroupId.Should().Be(server.CgroupId);

        // Over UDP the same lookup says so.
        await client.RunAsync(Timeout, "dig", "+tries=1", "+time=2", "+short", $"@{server.Address}", "web.flowsec.test", "A");
        (await run.NextAsync(e => e.Dns.Query == "web.flowsec.test")).Dns.Transport.Should().Be("udp");

        var counters = run.Counters();
        output.WriteLine(string.Join(", ", counters.Where(c => c.Key.StartsWith("dns_tcp", StringComparison.Ordinal)).Select(c => $"{c.Key}={c.Value}")));
        counters["dns_tcp_messages"].Should().Be(4, "query and response, each seen leaving one pod and entering the other");
        counters["dns_tcp_continuations_skipped"].Should().Be(0, "both ends' streams were placed from their first byte");
        counters["dns_tcp_garbage"].Should().Be(0);
        counters["dns_records_malformed"].Should().Be(0);
    }

    private static async Task StartDnsmasq(TestPod server, string zoneAddress, params IPAddress[] listen)
    {
        server.Start(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
            $"--address=/web.flowsec.test/{zoneAddress}", "--local=/flowsec.test/",
            .. listen.Select(a => $"--listen-address={a}"), "--bind-interfaces", "--port", "53"]);
        await WaitForListener(server, 53, "-Hlun");
        await WaitForListener(server, 53, "-Hltn");
    }

    private static IPAddress Ip(FlowSec.Api.V1.Endpoint endpoint) => new(endpoint.Ip.Span);

    // A fresh answer per test, so no event from another test's lookup can match.
    private static string ZoneAddress() => $"10.{Random.Shared.Next(1, 200)}.{Random.Shared.Next(1, 250)}.{Random.Shared.Next(1, 250)}";

    private static async Task WaitForListener(TestPod pod, int port, string ssFlags)
    {
        var watch = Stopwatch.StartNew();
        while (string.IsNullOrWhiteSpace(await TestTopology.Sh($"ip netns exec {pod.Namespace} ss {ssFlags} 'sport = :{port}'")))
        {
            if (watch.Elapsed > Timeout)
            {
                throw new Xunit.Sdk.XunitException($"nothing listens on port {port} ({ssFlags}) in {pod.Name}");
            }
            await Task.Delay(50);
        }
    }

    /// <summary>A started <see cref="DnsCapture"/> with its queue and name cache; disposing stops it.</summary>
    private sealed class CaptureRun : IAsyncDisposable
    {
        private CaptureRun(DnsCapture capture, SensorEventQueue queue, DnsNameCache names)
        {
            Capture = capture;
            Queue = queue;
            Names = names;
        }

        public DnsCapture Capture { get; }

        public SensorEventQueue Queue { get; }

        public DnsNameCache Names { get; }

        public static async Task<CaptureRun> StartAsync(ITestOutputHelper output, string? cgroupPath, bool expectActive = true, string egressProgram = "auto")
        {
            var queue = new SensorEventQueue();
            var options = Options.Create(new DnsCaptureOptions
            {
                Node = "kernel-test",
                CgroupPath = cgroupPath,
                QueryTimeout = TimeSpan.FromSeconds(1),
                EgressProgram = egressProgram,
            });
            var names = new DnsNameCache(options);
            var capture = new DnsCapture(queue, names, options, new TestOutputLogger<DnsCapture>(output));
            await capture.StartAsync(CancellationToken.None);
            var watch = Stopwatch.StartNew();
            while (expectActive ? !capture.CapturePaths().All(p => p.State == "active") : capture.ExecuteTask?.IsCompleted != true)
            {
                if (watch.Elapsed > Timeout || (expectActive && capture.ExecuteTask?.IsCompleted == true))
                {
                    string paths = string.Join("; ", capture.CapturePaths());
                    await capture.StopAsync(CancellationToken.None);
                    capture.Dispose();
                    throw new Xunit.Sdk.XunitException($"capture did not reach the expected state: {paths}");
                }
                await Task.Delay(10);
            }
            output.WriteLine($"capture ready after {watch.ElapsedMilliseconds} ms: {string.Join("; ", capture.CapturePaths())}");
            return new CaptureRun(capture, queue, names);
        }

        /// <summary>The next DNS event matching <paramref name="match"/> (others are skipped).</summary>
        public async Task<Event> NextAsync(Func<Event, bool> match)
        {
            using var cts = new CancellationTokenSource(Timeout);
            while (true)
            {
                var e = (await Queue.Reader.ReadAsync(cts.Token)).Event!;
                if (e.Type == EventType.Dns && match(e))
                {
                    return e;
                }
            }
        }

        public Dictionary<string, ulong> Counters()
        {
            var counters = new Dictionary<string, ulong>();
            Capture.AddCounters(counters);
            return counters;
        }

        public async ValueTask DisposeAsync()
        {
            await Capture.StopAsync(CancellationToken.None);
            Capture.Dispose();
        }
    }
}
