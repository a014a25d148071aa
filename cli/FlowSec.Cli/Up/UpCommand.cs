using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Cli.Status;

namespace FlowSec.Cli.Up;

/// <summary>
/// <c>flowsec up</c>: runs FlowSec on this host — a managed loopback ClickHouse (unless an external
/// URL is given), the relay and the sensor as child processes — and stops them all on Ctrl-C or
/// SIGTERM, in reverse order, so the sensor detaches its programs before anything else goes.
/// </summary>
public static class UpCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var clickHouseUrl = new Option<string?>("--clickhouse-url") { Description = "Use this ClickHouse instead of starting one" };
        var grpc = new Option<string>("--grpc") { Description = "Relay gRPC listen address", DefaultValueFactory = _ => "127.0.0.1:4245" };
        var ui = new Option<string>("--ui") { Description = "Web UI listen address", DefaultValueFactory = _ => "127.0.0.1:12000" };
        var node = new Option<string>("--node") { Description = "This node's name", DefaultValueFactory = _ => Environment.MachineName };
        var chHttp = new Option<int>("--clickhouse-http-port") { Description = "HTTP port of the managed ClickHouse", DefaultValueFactory = _ => 18123 };
        var chTcp = new Option<int>("--clickhouse-tcp-port") { Description = "Native port of the managed ClickHouse", DefaultValueFactory = _ => 19000 };
        var retention = new Option<int>("--retention-days") { Description = "Days of events kept (0 = all)", DefaultValueFactory = _ => 7 };
        var cgroup = new Option<string>("--cgroup")
        {
            Description = "Capture only this cgroup v2 subtree (absolute, or relative to the cgroup v2 mount); default the whole host",
            DefaultValueFactory = _ => "",
        };
        var tls = new Option<bool>("--tls")
        {
            Description = "Mutual TLS on the relay's gRPC port: a private CA and certificates in .flowsec/tls (made once), token still required",
        };
        var command = new Command("up", "Run FlowSec on this host: ClickHouse + relay + sensor + UI")
        {
            clickHouseUrl, grpc, ui, node, chHttp, chTcp, retention, cgroup, tls,
        };
        command.SetAction(async (parse, ct) => await RunAsync(
            parse.GetValue(clickHouseUrl), parse.GetValue(grpc)!, parse.GetValue(ui)!, parse.GetValue(node)!,
            parse.GetValue(chHttp), parse.GetValue(chTcp), parse.GetValue(retention), parse.GetValue(cgroup)!,
            parse.GetValue(tls), ct));
        return command;
    }

    private static async Task<int> RunAsync(string? clickHouseUrl, string grpc, string ui, string node,
        int chHttpPort, int chTcpPort, int retentionDays, string cgroup, bool tls, CancellationToken ct)
    {
        if (Environment.UserName != "root")
        {
            Console.Error.WriteLine("flowsec up: the sensor loads eBPF programs and must run as root");
            return 2;
        }
        var started = Stopwatch.StartNew();
        var paths = FlowSecPaths.Resolve();
        var token = TokenFile.ReadOrCreate(paths.TokenFile);
        string[] relayTls = [], sensorTls = [];
        ClientTls? clientTls = null;
        if (tls)
        {
            if (!TlsMaterial.Exists(paths.TlsDir))
            {
                Console.WriteLine($"creating a private CA and certificates in {paths.TlsDir} ...");
                TlsMaterial.Create(paths.TlsDir, TimeSpan.FromDays(365), [IPEndPoint.Parse(grpc).Address.ToString()]);
            }
            string F(string name) => Path.Combine(paths.TlsDir, name);
            relayTls = [$"--Relay:Tls:Certificate={F(TlsMaterial.RelayCertificateFile)}", $"--Relay:Tls:Key={F(TlsMaterial.RelayKeyFile)}",
                $"--Relay:Tls:ClientCa={F(TlsMaterial.CaFile)}"];
            sensorTls = [$"--Sensor:Tls:Ca={F(TlsMaterial.CaFile)}", $"--Sensor:Tls:Certificate={F(TlsMaterial.ClientCertificateFile)}",
                $"--Sensor:Tls:Key={F(TlsMaterial.ClientKeyFile)}"];
            clientTls = RelayConnection.TlsFor("", "", "", paths.TlsDir);
        }
        var relayUrl = (tls ? "https://" : "http://") + grpc;
        Directory.CreateDirectory(paths.State);
        await File.WriteAllTextAsync(paths.RelayUrlFile, relayUrl + "\n", ct);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c =>
        {
            c.Cancel = true;
            stop.Cancel();
        });
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c =>
        {
            c.Cancel = true;
            stop.Cancel();
        });

        ManagedClickHouse? clickHouse = null;
        ChildProcess? relay = null;
        ChildProcess? sensor = null;
        try
        {
            if (clickHouseUrl is null)
            {
                Console.WriteLine($"starting ClickHouse (data in {paths.ClickHouseDir}) ...");
                clickHouse = await ManagedClickHouse.StartAsync(paths.ClickHouseDir, chHttpPort, chTcpPort, stop.Token);
                clickHouseUrl = clickHouse.Url;
            }
            Console.WriteLine($"starting relay on {grpc} ...");
            relay = ChildProcess.Start("relay", "dotnet",
            [
                Path.Combine(paths.BinDir, "relay", "FlowSec.Relay.dll"),
                $"--Relay:GrpcListen={grpc}", $"--Relay:UiListen={ui}", $"--Relay:TokenFile={paths.TokenFile}",
                $"--Relay:UiDirectory={Path.Combine(paths.Home, "ui")}", $"--ClickHouse:Url={clickHouseUrl}",
                $"--ClickHouse:RetentionDays={retentionDays}", .. relayTls,
            ], Path.Combine(paths.LogDir, "relay.log"));
            using var client = new GrpcClient(new Uri(relayUrl), token, tls: clientTls);
            await WaitAsync("relay", relay, client, s => s.StorageOk, stop.Token);

            Console.WriteLine($"starting sensor as node {node} ...");
            // The ahead-of-time build when `flowsec` could make one, else the same code on the runtime.
            var native = Path.Combine(paths.BinDir, "sensor-native", "FlowSec.Sensor");
            string[] sensorCommand = File.Exists(native) ? [native] : ["dotnet", Path.Combine(paths.BinDir, "sensor", "FlowSec.Sensor.dll")];
            sensor = ChildProcess.Start("sensor", sensorCommand[0],
            [
                .. sensorCommand[1..],
                $"--Sensor:Relay={relayUrl}", $"--Sensor:TokenFile={paths.TokenFile}", $"--Sensor:Node={node}",
                $"--Sensor:SpoolDirectory={Path.Combine(paths.State, "spool")}", $"--Sensor:Cgroup={cgroup}", .. sensorTls,
            ], Path.Combine(paths.LogDir, "sensor.log"));
            // Up means every capture has finished loading (the file programs take a few seconds to verify).
            await WaitAsync("sensor", sensor, client, s => StatusCommand.IsHealthy(s, DateTimeOffset.UtcNow) &&
                s.Nodes.All(n => n.Sensor is null || n.Sensor.Capture.All(c => c.Reason != "not started")), stop.Token);

            Console.WriteLine($"FlowSec is up ({started.Elapsed.TotalSeconds:0.0} s). UI: http://{ui}/");
            Console.WriteLine($"logs in {paths.LogDir}; `./flowsec status` for details; Ctrl-C stops everything.");
            await Task.WhenAny(relay.Exited, sensor.Exited, Task.Delay(Timeout.Infinite, stop.Token));
            if (!stop.IsCancellationRequested)
            {
                Console.Error.WriteLine("flowsec up: a component stopped unexpectedly; stopping the rest");
                return 1;
            }
            Console.WriteLine("stopping ...");
            return 0;
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            Console.WriteLine("stopping ...");
            return 0;
        }
        catch (StartupException ex)
        {
            Console.Error.WriteLine("flowsec up: " + ex.Message);
            return 1;
        }
        finally
        {
            if (sensor is not null)
            {
                await sensor.DisposeAsync();
            }
            if (relay is not null)
            {
                await relay.DisposeAsync();
            }
            if (clickHouse is not null)
            {
                await clickHouse.DisposeAsync();
            }
        }
    }

    /// <summary>Polls the relay's status until <paramref name="ready"/> holds, the child dies, or 60 s pass.</summary>
    private static async Task WaitAsync(string what, ChildProcess child, GrpcClient client, Func<StatusResponse, bool> ready,
        CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        var last = "";
        while (DateTime.UtcNow < deadline)
        {
            if (child.Exited.IsCompleted)
            {
                throw new StartupException($"{what} exited with code {child.ExitCode}; last log lines ({child.LogPath}):\n{child.Tail()}");
            }
            try
            {
                var status = await client.UnaryAsync(RelayMethods.GetStatus, new StatusRequest(), StatusResponse.Parser, ct,
                    TimeSpan.FromSeconds(2));
                if (ready(status))
                {
                    return;
                }
                last = status.StorageOk ? "waiting for the sensor to report" : "storage: " + status.StorageError;
            }
            catch (GrpcException ex)
            {
                last = ex.Message;
            }
            await Task.Delay(200, ct);
        }
        throw new StartupException($"{what} did not become ready within 60 s ({last}); log: {child.LogPath}\n{child.Tail()}");
    }

    private sealed class StartupException(string message) : Exception(message);
}
