using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;

namespace FlowSec.Benchmarks;

/// <summary>
/// Against a running FlowSec (`./flowsec up`, or `up --tls` with an https:// relay): makes connections from this process and measures
/// the time from each connection's close to (a) its flow on a live GetEvents follow stream and
/// (b) its row being readable from ClickHouse through the relay's query path.
/// </summary>
internal static class EndToEndLatency
{
    public static async Task RunAsync(string relay, string tokenFile, int connections, string tlsDir)
    {
        // An https:// relay (`flowsec up --tls`) is reached with the CA and client certificate in tlsDir.
        var address = new Uri(relay);
        ClientTls? tls = address.Scheme == Uri.UriSchemeHttps
            ? new ClientTls
            {
                Ca = Path.Combine(tlsDir, TlsMaterial.CaFile),
                Certificate = Path.Combine(tlsDir, TlsMaterial.ClientCertificateFile),
                Key = Path.Combine(tlsDir, TlsMaterial.ClientKeyFile),
            }
            : null;
        using var client = new GrpcClient(address, TokenFile.Read(tokenFile), tls: tls);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        _ = Task.Run(async () =>
        {
            while (true)
            {
                using var s = await listener.AcceptSocketAsync();
                s.Close();
            }
        });

        var closedAt = new ConcurrentDictionary<int, long>();
        var live = new ConcurrentDictionary<int, double>();
        using var cts = new CancellationTokenSource();
        var request = new GetEventsRequest { Follow = true };
        request.EventTypes.Add(EventType.Flow);
        var follower = Task.Run(async () =>
        {
            try
            {
                await foreach (var e in client.ServerStreamingAsync(RelayMethods.GetEvents, request, Event.Parser, cts.Token))
                {
                    var now = Stopwatch.GetTimestamp();
                    if (e.Destination?.Port == (uint)port && e.Flow.Direction == "egress" &&
                        closedAt.TryGetValue((int)e.Source.Port, out var t0))
                    {
                        live.TryAdd((int)e.Source.Port, Stopwatch.GetElapsedTime(t0, now).TotalMilliseconds);
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        });
        await Task.Delay(500); // let the follow stream subscribe

        var stored = new List<double>();
        for (var i = 0; i < connections; i++)
        {
            using (var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
            {
                await socket.ConnectAsync(IPAddress.Loopback, port);
                var localPort = ((IPEndPoint)socket.LocalEndPoint!).Port;
                socket.Close();
                closedAt[localPort] = Stopwatch.GetTimestamp();
                if (i % 10 == 0)
                {
                    stored.Add(await WaitStoredAsync(client, port, localPort, closedAt[localPort]));
                }
            }
            await Task.Delay(20);
        }
        var deadline = Stopwatch.StartNew();
        // Flows are matched by client port, and loopback reuses ports still in TIME_WAIT: the
        // distinct ports, not the connections, are what the follow stream can show.
        while (live.Count < closedAt.Count && deadline.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(50);
        }
        await cts.CancelAsync();
        Console.WriteLine($"e2e: {connections} connections from {closedAt.Count} distinct client ports; {live.Count} ports seen on the follow stream, {stored.Count} polled from storage");
        Console.WriteLine($"  close → live follow stream: p50 {Percentile(live.Values, 50):0} ms, p99 {Percentile(live.Values, 99):0} ms, max {live.Values.DefaultIfEmpty().Max():0} ms");
        Console.WriteLine($"  close → row in ClickHouse (query polled every 20 ms): p50 {Percentile(stored, 50):0} ms, p99 {Percentile(stored, 99):0} ms, max {stored.DefaultIfEmpty().Max():0} ms");
    }

    private static async Task<double> WaitStoredAsync(GrpcClient client, int port, int localPort, long t0)
    {
        var since = (ulong)DateTimeOffset.UtcNow.AddSeconds(-30).ToUnixTimeMilliseconds() * 1_000_000;
        while (Stopwatch.GetElapsedTime(t0) < TimeSpan.FromSeconds(30))
        {
            var request = new GetEventsRequest { SinceUnixNano = since };
            request.EventTypes.Add(EventType.Flow);
            await foreach (var e in client.ServerStreamingAsync(RelayMethods.GetEvents, request, Event.Parser, CancellationToken.None))
            {
                if (e.Destination?.Port == (uint)port && e.Source?.Port == (uint)localPort)
                {
                    return Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                }
            }
            await Task.Delay(20);
        }
        return double.NaN;
    }

    /// <summary>The p-th percentile (nearest rank) of the values that are numbers.</summary>
    internal static double Percentile(IEnumerable<double> values, int p)
    {
        var sorted = values.Where(v => !double.IsNaN(v)).Order().ToArray();
        return sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p / 100.0 * sorted.Length) - 1)];
    }
}
