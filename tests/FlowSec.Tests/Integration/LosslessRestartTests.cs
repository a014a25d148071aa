using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Cli.Up;
using FlowSec.Relay.Storage;
using FlowSec.Tests.Storage;
using Xunit.Abstractions;

namespace FlowSec.Tests.Integration;

/// <summary>
/// At-least-once with de-duplication, proven with real processes: steady generated connections
/// while the relay or clickhouse-server is killed with SIGKILL and restarted; afterwards every
/// connection is stored exactly once (counted per identity: client port and direction). And a
/// sensor stopped with SIGTERM or killed with SIGKILL leaves no BPF program, link, map or cgroup
/// attachment behind, and nothing the relay had acked is lost or stored twice when it starts again.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class LosslessRestartTests(FlowSecStack stack, ITestOutputHelper output)
{
    private const int ConnectionsPerSecond = 40;
    private const int Connections = 20;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task Killing_the_relay_while_an_insert_is_stored_but_unacked_stores_every_connection_exactly_once()
    {
        const string node = "lossless-relay-kill";
        await using var proxy = new InsertHoldingProxy(stack.ClickHouse.HttpPort);
        var relayPort = FlowSecStack.FreePort();
        using var relayClient = new GrpcClient(new Uri($"http://127.0.0.1:{relayPort}"), stack.Token);
        var relay = stack.StartRelay("kill-relay-1", relayPort, FlowSecStack.FreePort(), proxy.Url);
        ChildProcess? restarted = null;
        try
        {
            await stack.WaitForStatusAsync(s => s.StorageOk, relay, "relay behind the proxy", relayClient);
            await using var sensor = await stack.StartSpoolingSensorAsync(node, new Uri($"http://127.0.0.1:{relayPort}"), relayClient);
            await using var traffic = SteadyConnections.Start(ConnectionsPerSecond);
            using var clickHouse = new ClickHouseHttpClient(new ClickHouseOptions { Url = stack.ClickHouse.Url });
            await WaitAsync(async () => (await StoredAsync(clickHouse, node, traffic.Port)).Rows > 0, "first flows stored", sensor);

            // The next flows insert reaches ClickHouse, its answer never reaches the relay: stored, not acked.
            await proxy.HoldNextInsert("flowsec.flows").WaitAsync(Timeout);
            var storedBeforeKill = (await StoredAsync(clickHouse, node, traffic.Port)).Rows;
            Process.GetProcessById(relay.ProcessId).Kill(); // SIGKILL
            await relay.Exited.WaitAsync(Timeout);
            var atKill = traffic.Count;
            await WaitAsync(() => Task.FromResult(traffic.Count >= atKill + ConnectionsPerSecond), "connections while the relay is down", sensor);

            restarted = stack.StartRelay("kill-relay-2", relayPort, FlowSecStack.FreePort(), proxy.Url);
            await stack.WaitForStatusAsync(s => s.Nodes.Any(n => n.Node == node && n.Connected), restarted, "sensor back on the restarted relay", relayClient);
            var atRestart = traffic.Count;
            await WaitAsync(() => Task.FromResult(traffic.Count >= atRestart + ConnectionsPerSecond), "connections after the restart", sensor);
            var generated = await traffic.StopAsync();

            var stored = await SettledAsync(clickHouse, node, traffic, relayClient, sensor);
            var status = await stack.StatusAsync(relayClient);
            output.WriteLine($"relay SIGKILL: generated {generated} connections = {2 * generated} flows; stored {stored.Rows} flows " +
                $"({stored.Identities} connection sides, {stored.DuplicateEvents} duplicate events); {storedBeforeKill} stored before the kill; restarted relay skipped duplicates " +
                $"{status.DuplicateEventsSkipped} events ({status.DuplicateBatchesSkipped} re-sent batches)");
            output.WriteLine(await DuplicatesAsync(clickHouse, node, traffic.Port));
            AssertExactlyOnce(stored, traffic.ClientPorts, sensor, restarted);
            status.DuplicateEventsSkipped.Should().BeGreaterThan(0,
                "the held insert was stored but never acked, so the sensor re-sent it and the restarted relay found it in ClickHouse");
            var printed = new StringWriter();
            FlowSec.Cli.Status.StatusCommand.Print(printed, status, $"127.0.0.1:{relayPort}");
            printed.ToString().Should().Contain($"duplicates skipped {status.DuplicateEventsSkipped} events ({status.DuplicateBatchesSkipped} re-sent batches)");
        }
        finally
        {
            await relay.DisposeAsync();
            if (restarted is not null)
            {
                await restarted.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Killing_clickhouse_server_and_restarting_it_loses_and_duplicates_nothing()
    {
        const string node = "lossless-ch-kill";
        var dir = Path.Combine(stack.Dir, "ch-kill");
        int httpPort = FlowSecStack.FreePort(), tcpPort = FlowSecStack.FreePort();
        var server = await ManagedClickHouse.StartAsync(dir, httpPort, tcpPort, CancellationToken.None);
        ManagedClickHouse? restartedServer = null;
        int relayPort = FlowSecStack.FreePort(), uiPort = FlowSecStack.FreePort();
        using var relayClient = new GrpcClient(new Uri($"http://127.0.0.1:{relayPort}"), stack.Token);
        await using var relay = stack.StartRelay("ch-kill-relay", relayPort, uiPort, server.Url);
        try
        {
            await stack.WaitForStatusAsync(s => s.StorageOk, relay, "relay on its own ClickHouse", relayClient);
            await using var sensor = await stack.StartSpoolingSensorAsync(node, new Uri($"http://127.0.0.1:{relayPort}"), relayClient);
            await using var traffic = SteadyConnections.Start(ConnectionsPerSecond);
            using var clickHouse = new ClickHouseHttpClient(new ClickHouseOptions { Url = server.Url });
            await WaitAsync(async () => (await StoredAsync(clickHouse, node, traffic.Port)).Rows > 0, "first flows stored", sensor);

            Process.GetProcessById(server.ProcessId).Kill(); // SIGKILL, whatever it was doing
            await server.DisposeAsync();
            await stack.WaitForStatusAsync(s => !s.StorageOk, relay, "relay noticing ClickHouse is gone", relayClient);
            var atKill = traffic.Count;
            await WaitAsync(() => Task.FromResult(traffic.Count >= atKill + 2 * ConnectionsPerSecond), "connections while ClickHouse is down", sensor);

            restartedServer = await ManagedClickHouse.StartAsync(dir, httpPort, tcpPort, CancellationToken.None);
            var atRestart = traffic.Count;
            await WaitAsync(() => Task.FromResult(traffic.Count >= atRestart + ConnectionsPerSecond), "connections after the restart", sensor);
            var generated = await traffic.StopAsync();

            var stored = await SettledAsync(clickHouse, node, traffic, relayClient, sensor);
            var status = await stack.StatusAsync(relayClient);
            using var http = new HttpClient();
            var metrics = await http.GetStringAsync(new Uri($"http://127.0.0.1:{uiPort}/metrics"));
            var insertErrors = metrics.Split('\n').Single(l => l.StartsWith("flowsec_relay_insert_errors_total ", StringComparison.Ordinal)).Split(' ')[1];
            output.WriteLine($"clickhouse SIGKILL: generated {generated} connections = {2 * generated} flows; stored {stored.Rows} flows " +
                $"({stored.Identities} connection sides, {stored.DuplicateEvents} duplicate events); relay insert errors (retried) {insertErrors}; duplicates skipped " +
                $"{status.DuplicateEventsSkipped} events ({status.DuplicateBatchesSkipped} re-sent batches)");
            output.WriteLine(await DuplicatesAsync(clickHouse, node, traffic.Port));
            AssertExactlyOnce(stored, traffic.ClientPorts, sensor, relay);
            double.Parse(insertErrors, CultureInfo.InvariantCulture).Should().BeGreaterThan(0, "inserts failed while ClickHouse was down, and were retried");
            metrics.Should().Contain($"flowsec_relay_duplicate_events_skipped_total {status.DuplicateEventsSkipped}\n");
        }
        finally
        {
            await server.DisposeAsync();
            if (restartedServer is not null)
            {
                await restartedServer.DisposeAsync();
            }
        }
    }

    [Theory]
    [InlineData(15)] // SIGTERM
    [InlineData(9)] // SIGKILL
    public async Task A_stopped_sensor_leaves_no_bpf_objects_and_loses_nothing_acked(int signal)
    {
        var node = $"restart-sig{signal}";
        using var clickHouse = new ClickHouseHttpClient(new ClickHouseOptions { Url = stack.ClickHouse.Url });
        await using var acked = SteadyConnections.Idle();
        await using var late = SteadyConnections.Idle();

        var sensor = await stack.StartSpoolingSensorAsync(node);
        await using var stopAtEnd = sensor;
        var owned = await BpfObjectsAsync(sensor.ProcessId);
        owned.Programs.Should().NotBeEmpty(sensor.Tail(20));
        owned.Links.Should().NotBeEmpty("programs are attached through links");
        owned.Maps.Should().NotBeEmpty();
        var cgroupAttached = (await IdsAsync("cgroup", "tree " + TestTopology.CgroupRoot)).Intersect(owned.Programs).ToList();

        // Acked: stored before the stop. Late: made just before it, maybe not even read from the ring yet.
        await acked.ConnectAsync(Connections);
        await Eventually.HoldsAsync(async () => (await StoredAsync(clickHouse, node, acked.Port)).Rows == 2 * Connections,
            Timeout, () => "acked flows stored\n" + sensor.Tail(30));
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

        // The kernel frees objects once the last reference (the process's fds) is gone; maps a little later.
        var leftovers = "";
        await Eventually.HoldsAsync(async () =>
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
        }, Timeout, () => "BPF objects released: left " + leftovers);

        // The next run replays whatever the last one spooled; nothing acked is stored twice.
        await using var next = await stack.StartSpoolingSensorAsync(node);
        await stack.WaitUntilSensorHoldsNothingAsync(node, next);
        var ackedStored = await StoredAsync(clickHouse, node, acked.Port);
        var lateStored = await StoredAsync(clickHouse, node, late.Port);
        output.WriteLine($"signal {signal}: {owned.Programs.Count} programs, {owned.Links.Count} links, {owned.Maps.Count} maps, " +
            $"{cgroupAttached.Count} cgroup attachments before, none after; acked flows {2 * Connections} → stored {ackedStored.Rows}; " +
            $"flows made just before the stop {2 * Connections} → stored {lateStored.Rows}");
        ackedStored.Rows.Should().Be(2 * Connections, "acked flows are all stored, once");
        ackedStored.PerIdentity.Should().Equal(Sides(acked.ClientPorts));
        ackedStored.DuplicateEvents.Should().Be(0);
        var lateSides = Sides(late.ClientPorts);
        lateStored.PerIdentity.Where(p => p.Value > lateSides.GetValueOrDefault(p.Key)).Should().BeEmpty("a replayed batch is not stored twice");
        lateStored.DuplicateEvents.Should().Be(0, "a replayed batch is not stored twice");
        if (signal == 15)
        {
            lateStored.Rows.Should().Be(2 * Connections, "on SIGTERM the sensor drains what it captured (or spools it for the next run)");
        }
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
            var fields = new Dictionary<string, string>();
            foreach (var f in text.Split('\n').Select(l => l.Split(':', 2)).Where(f => f.Length == 2))
            {
                fields.TryAdd(f[0].Trim(), f[1].Trim()); // e.g. inotify fds repeat their keys
            }
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

    // Waits until every flow has arrived and the sensor holds nothing (no unacked batch, empty spool), then counts.
    private async Task<StoredFlows> SettledAsync(ClickHouseHttpClient clickHouse, string node, SteadyConnections traffic, GrpcClient relayClient, ChildProcess sensor)
    {
        var expected = 2 * traffic.Count;
        await WaitAsync(async () => (await StoredAsync(clickHouse, node, traffic.Port)).Rows >= expected, $"{expected} flows stored", sensor);
        await stack.WaitUntilSensorHoldsNothingAsync(node, sensor, relayClient);
        // Acked means stored: with nothing unacked, nothing of this traffic can still arrive.
        return await StoredAsync(clickHouse, node, traffic.Port);
    }

    private static void AssertExactlyOnce(StoredFlows stored, IReadOnlyList<uint> clientPorts, ChildProcess sensor, ChildProcess relay)
    {
        var because = $"\n--- sensor\n{sensor.Tail(30)}\n--- relay\n{relay.Tail(30)}";
        stored.DuplicateEvents.Should().Be(0, "no event is stored twice" + because);
        stored.PerIdentity.Should().Equal(Sides(clientPorts), "every connection side is stored, once" + because);
        stored.Rows.Should().Be(2 * clientPorts.Count);
    }

    // Linux reuses a loopback client port in TIME_WAIT, so a port may carry several connections:
    // each side of each port has as many final flows as connections were made from it.
    private static Dictionary<(uint Port, string Direction), int> Sides(IReadOnlyList<uint> clientPorts) =>
        clientPorts.GroupBy(p => p).SelectMany(g => new[] { "egress", "ingress" }.Select(d => (Key: (g.Key, d), Count: g.Count())))
            .ToDictionary(x => x.Key, x => x.Count);

    // For a failure message: which batches the rows of a flow stored more than once came in.
    private static async Task<string> DuplicatesAsync(ClickHouseHttpClient clickHouse, string node, int port) =>
        "duplicated (port, direction, batch ids): " + await clickHouse.QueryTextAsync(
            $"SELECT src_port, direction, groupArray(state), groupArray(batch_id) AS batches FROM flowsec.flows WHERE node = {SqlLiteral.String(node)} AND dst_port = {port} " +
            "GROUP BY src_port, direction HAVING count() > uniqExact(state, time_ns) ORDER BY src_port LIMIT 20 FORMAT TabSeparated");

    /// <summary>
    /// The stored flows to <paramref name="port"/> from <paramref name="node"/>. Besides its final
    /// flow, a connection side may have events of its own: an "established" report when it stayed
    /// open past the sensor's report interval (an accept delayed by load), a "dropped" flow for a
    /// packet the kernel dropped (e.g. one arriving after close). Those count for duplicates (per
    /// event: client port, direction, state, time) but not per connection.
    /// </summary>
    internal static async Task<StoredFlows> StoredAsync(ClickHouseHttpClient clickHouse, string node, int port)
    {
        var rows = await clickHouse.QueryTextAsync(
            $"SELECT src_port, direction, countIf(state NOT IN ('established', 'dropped')), count() - uniqExact(state, time_ns) FROM flowsec.flows " +
            $"WHERE node = {SqlLiteral.String(node)} AND dst_port = {port} GROUP BY src_port, direction FORMAT TabSeparated");
        var fields = rows.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t')).ToList();
        var perIdentity = fields.ToDictionary(f => (Port: uint.Parse(f[0], CultureInfo.InvariantCulture), Direction: f[1]), f => int.Parse(f[2], CultureInfo.InvariantCulture));
        return new StoredFlows(perIdentity, fields.Sum(f => int.Parse(f[3], CultureInfo.InvariantCulture)));
    }

    private static Task WaitAsync(Func<Task<bool>> condition, string what, ChildProcess sensor) =>
        Eventually.HoldsAsync(async () =>
        {
            sensor.Exited.IsCompleted.Should().BeFalse($"sensor exited while waiting for {what}:\n{sensor.Tail(30)}");
            return await condition();
        }, Timeout, () => $"{what}\n{sensor.Tail(30)}");
}

/// <summary>Stored flows of one generated traffic, counted per connection side (client port, direction).</summary>
/// <param name="PerIdentity">How many final flows (closed, reset, …) each connection side has.</param>
/// <param name="DuplicateEvents">Rows that repeat an event already stored (same side, state and time).</param>
public sealed record StoredFlows(IReadOnlyDictionary<(uint Port, string Direction), int> PerIdentity, int DuplicateEvents)
{
    /// <summary>Final flows.</summary>
    public int Rows => PerIdentity.Values.Sum();

    /// <summary>Distinct identities.</summary>
    public int Identities => PerIdentity.Count;
}
