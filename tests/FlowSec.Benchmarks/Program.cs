using FlowSec.Benchmarks;

// FlowSec's bench commands. Figures go to docs/benchmarks.md; nothing here is pass/fail.
//   capture [connections]                   user-space decode + assemble + attribute throughput
//   e2e [relay] [token-file] [connections] [tls-dir]  connection → live stream / ClickHouse latency (needs ./flowsec up)
//   overhead [rounds] [seconds] [sensor]    nginx + wrk between two netns: none vs empty programs vs sensor
//                                           (sensor: a FlowSec.Sensor.dll or the native build; default the runtime build)
//   overhead-profile [seconds] [sensor]     the sensor alone under both workloads: per BPF program runs and ns per
//                                           request (bpf_stats), sensor CPU per request
//   scope [events]                          per-event cost of scoping a sensor to a cgroup subtree (root)
//   query [rows] [repeats]                  load synthetic flows + DNS into a managed ClickHouse, time the incident queries
//   dns-tcp [messages]                      DNS-over-TCP reassembly (DnsTcpFraming) messages/s per core
//   encode [rows] [rounds]                  relay CPU per flow row: ingest decode vs object parse, then a Native block's append, sort, write (no ClickHouse)
//   ingest [seconds] [sensors] [batch-events] [--Section:Key=value...]
//                                           relay process + managed ClickHouse fed over gRPC Push by simulated
//                                           sensors: stored rows/s, relay memory, CPU per row (extra args go to the relay)
//   views [rows-per-insert] [inserts] [rounds]  clickhouse-server CPU per flow for each set of views on flows (no relay)
var name = args.Length > 0 ? args[0] : "";
switch (name)
{
    case "capture":
        CaptureThroughput.Run(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1_000_000);
        return 0;
    case "e2e":
        await EndToEndLatency.RunAsync(
            args.Length > 1 ? args[1] : "http://127.0.0.1:4245",
            args.Length > 2 ? args[2] : ".flowsec/token",
            args.Length > 3 ? int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 200,
            args.Length > 4 ? args[4] : ".flowsec/tls");
        return 0;
    case "overhead":
        return await OverheadBenchmark.RunAsync(
            args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 5,
            args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 5,
            args.Length > 3 ? args[3] : null);
    case "overhead-profile":
        return await OverheadBenchmark.ProfileAsync(
            args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 10,
            args.Length > 2 ? args[2] : null);
    case "scope":
        ScopeCost.Run(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 20_000_000);
        return 0;
    case "query":
        await QueryBenchmark.RunAsync(
            args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 10_000_000,
            args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 10);
        return 0;
    case "dns-tcp":
        DnsTcpFramingThroughput.Run(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 2_000_000);
        return 0;
    case "encode":
        await EncodeCost.RunAsync(
            args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 100_000,
            args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 10);
        return 0;
    case "views":
        await ViewCost.RunAsync(
            args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 200_000,
            args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 5,
            args.Length > 3 ? int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 3);
        return 0;
    case "ingest":
        var numbers = args.Skip(1).TakeWhile(a => !a.StartsWith("--", StringComparison.Ordinal)).Select(a => int.Parse(a, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        return await IngestThroughput.RunAsync(
            numbers.Length > 0 ? numbers[0] : 60,
            numbers.Length > 1 ? numbers[1] : 4,
            numbers.Length > 2 ? numbers[2] : 4096,
            args.Skip(1).Where(a => a.StartsWith("--", StringComparison.Ordinal)).ToArray());
    default:
        Console.Error.WriteLine("usage: FlowSec.Benchmarks capture [connections] | e2e [relay] [token-file] [connections] [tls-dir] | overhead [rounds] [seconds] [sensor] | overhead-profile [seconds] [sensor] | scope [events] | query [rows] [repeats] | dns-tcp [messages] | encode [rows] [rounds] | ingest [seconds] [sensors] [batch-events] [--Section:Key=value...] | views [rows-per-insert] [inserts] [rounds]");
        return 2;
}
