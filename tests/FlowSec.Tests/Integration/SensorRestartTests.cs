using System.Diagnostics;
using System.Text.Json;
using FlowSec.Cli.Up;
using FlowSec.Relay.Storage;
using Xunit.Abstractions;

namespace FlowSec.Tests.Integration;

/// <summary>
/// A sensor stopped with SIGTERM or killed with SIGKILL leaves no BPF program, link, map or cgroup
/// attachment behind, and nothing the relay had acked is lost or stored twice when it starts again.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class SensorRestartTests(FlowSecStack stack, ITestOutputHelper output)
{
    private const int Connections = 20;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    [Theory]
    [InlineData(15)] // SIGTERM
    [InlineData(9)] // SIGKILL
    public async Task A_stopped_sensor_leaves_no_bpf_objects_and_loses_nothing_acked(int signal)
    {
        var node = $"restart-sig{signal}";
        var spool = Path.Combine(stack.Dir, node + "-spool");
        using var clickHouse = new ClickHouseHttpClient(new ClickHouseOptions { Url = stack.ClickHouse.Url });
        await using var acked = SteadyConnections.Idle();
        await using var late = SteadyConnections.Idle();

        var sensor = await StartAsync(node, spool);
        var owned = await BpfObjectsAsync(sensor.ProcessId);
        owned.Programs.Should().NotBeEmpty(sensor.Tail(20));
        owned.Links.Should().NotBeEmpty("programs are attached through links");
        owned.Maps.Should().NotBeEmpty();
        var cgroupAttached = (await IdsAsync("cgroup", "tree " + TestTopology.CgroupRoot)).Intersect(owned.Programs).ToList();

        // Acked: stored before the stop. Late: made just before it, maybe not even read from the ring yet.
        await acked.ConnectAsync(Connections);
        await WaitAsync(async () => (await LosslessRestartTests.StoredAsync(clickHouse, node, acked.Port)).Rows == 2 * Connections, "acked flows stored", sensor);
        await late.ConnectAsync(Connections);
        if (signal == 15)
        {
            await sensor.StopAsync(Timeout);
            sensor.ExitCode.Should().Be(0, sensor.Tail(20));
        }
        else
        {
            Process.GetProcessById(sensor.ProcessId).Kill();
            await sensor.Exited.WaitAsync(Timeout);
        }
        await sensor.DisposeAsync();

        // The kernel frees objects once the last reference (the process's fds) is gone; maps a little later.
        var leftovers = "";
        await WaitAsync(async () =>
        {
            var left = new
            {
                Programs = (await IdsAsync("prog", "show")).Intersect(owned.Programs).ToList(),
                Links = (await IdsAsync("link", "show")).Intersect(owned.Links).ToList(),
                Maps = (await IdsAsync("map", "show")).Intersect(owned.Maps).ToList(),
                Cgroup = (await IdsAsync("cgroup", "tree " + TestTopology.CgroupRoot)).Intersect(owned.Programs).ToList(),
            };
            leftovers = JsonSerializer.Serialize(left);
            return left.Programs.Count + left.Links.Count + left.Maps.Count + left.Cgroup.Count == 0;
        }, () => "BPF objects released: left " + leftovers, null);

        // The next run replays whatever the last one spooled; nothing acked is stored twice.
        await using var next = await StartAsync(node, spool);
        await WaitAsync(async () =>
        {
            var n = (await stack.StatusAsync()).Nodes.SingleOrDefault(n => n.Node == node);
            return n?.Sensor?.Counters is { } c && c.GetValueOrDefault("export_unacked_batches") == 0 && c.GetValueOrDefault("spool_batches") == 0;
        }, () => "restarted sensor holding nothing", next);
        var ackedStored = await LosslessRestartTests.StoredAsync(clickHouse, node, acked.Port);
        var lateStored = await LosslessRestartTests.StoredAsync(clickHouse, node, late.Port);
        output.WriteLine($"signal {signal}: {owned.Programs.Count} programs, {owned.Links.Count} links, {owned.Maps.Count} maps, " +
            $"{cgroupAttached.Count} cgroup attachments before, none after; acked flows {2 * Connections} → stored {ackedStored.Rows}; " +
            $"flows made just before the stop {2 * Connections} → stored {lateStored.Rows}");
        ackedStored.Rows.Should().Be(2 * Connections, "acked flows are all stored, once");
        ackedStored.PerIdentity.Values.Should().OnlyContain(c => c == 1);
        ackedStored.DuplicateEvents.Should().Be(0);
        lateStored.PerIdentity.Values.Should().OnlyContain(c => c == 1, "a replayed batch is not stored twice");
        lateStored.DuplicateEvents.Should().Be(0, "a replayed batch is not stored twice");
        if (signal == 15)
        {
            lateStored.Rows.Should().Be(2 * Connections, "on SIGTERM the sensor drains what it captured (or spools it for the next run)");
        }
    }

    private async Task<ChildProcess> StartAsync(string node, string spool)
    {
        var sensor = stack.StartSensor(node, stack.RelayAddress, node, FlowSecStack.FreePort(), $"--Sensor:SpoolDirectory={spool}");
        await stack.WaitForStatusAsync(s => s.Nodes.Any(n => n.Node == node && n.Connected && n.Sensor is not null &&
                                                            n.Sensor.Capture.Any(c => c.Signal == "tcp" && c.State == "active")), sensor, "sensor " + node);
        return sensor;
    }

    /// <summary>The BPF programs, links and maps a process holds, from its fds' fdinfo.</summary>
    private static async Task<(HashSet<long> Programs, HashSet<long> Links, HashSet<long> Maps)> BpfObjectsAsync(int pid)
    {
        HashSet<long> programs = [], links = [], maps = [];
        foreach (var fdinfo in Directory.EnumerateFiles($"/proc/{pid}/fdinfo"))
        {
            string text;
            try
            {
                text = await File.ReadAllTextAsync(fdinfo);
            }
            catch (IOException)
            {
                continue; // closed meanwhile
            }
            var fields = text.Split('\n').Select(l => l.Split(':', 2)).Where(f => f.Length == 2)
                .ToDictionary(f => f[0].Trim(), f => f[1].Trim());
            if (fields.TryGetValue("link_id", out var link))
            {
                links.Add(long.Parse(link, System.Globalization.CultureInfo.InvariantCulture));
            }
            else if (fields.TryGetValue("prog_id", out var prog))
            {
                programs.Add(long.Parse(prog, System.Globalization.CultureInfo.InvariantCulture));
            }
            else if (fields.TryGetValue("map_id", out var map))
            {
                maps.Add(long.Parse(map, System.Globalization.CultureInfo.InvariantCulture));
            }
        }
        return (programs, links, maps);
    }

    /// <summary>Every <c>id</c> in <c>bpftool OBJECT COMMAND -j</c> (for <c>cgroup tree</c>: the attached programs).</summary>
    private static async Task<HashSet<long>> IdsAsync(string obj, string command)
    {
        var json = await TestTopology.Sh($"bpftool {obj} {command} -j");
        var ids = new HashSet<long>();
        Collect(JsonDocument.Parse(json.Length == 0 ? "[]" : json).RootElement);
        return ids;

        void Collect(JsonElement e)
        {
            if (e.ValueKind == JsonValueKind.Array)
            {
                foreach (var item in e.EnumerateArray())
                {
                    Collect(item);
                }
            }
            else if (e.ValueKind == JsonValueKind.Object)
            {
                foreach (var p in e.EnumerateObject())
                {
                    if (p.Name == "id" && p.Value.ValueKind == JsonValueKind.Number)
                    {
                        ids.Add(p.Value.GetInt64());
                    }
                    Collect(p.Value);
                }
            }
        }
    }

    private static Task WaitAsync(Func<Task<bool>> condition, string what, ChildProcess sensor) =>
        WaitAsync(condition, () => what, sensor);

    private static async Task WaitAsync(Func<Task<bool>> condition, Func<string> what, ChildProcess? sensor)
    {
        var watch = Stopwatch.StartNew();
        while (!await condition())
        {
            watch.Elapsed.Should().BeLessThan(Timeout, $"waiting for {what()}\n{sensor?.Tail(30)}");
            await Task.Delay(100);
        }
    }
}
