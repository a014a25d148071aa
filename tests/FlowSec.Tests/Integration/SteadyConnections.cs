using System.Net;
using System.Net.Sockets;

namespace FlowSec.Tests.Integration;

/// <summary>
/// Generated traffic with known identities: TCP connections to a loopback listener at a steady
/// rate, each opened and closed at once. Every connection is one client port; the sensor reports
/// it twice (the connecting and the accepted socket: directions egress and ingress), both with the
/// client as source and the listener's port as destination.
/// </summary>
public sealed class SteadyConnections : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly CancellationTokenSource _stopConnecting = new();
    private readonly List<uint> _clientPorts = [];
    private readonly Task _accepting;
    private Task _connecting = Task.CompletedTask;

    private SteadyConnections()
    {
        _listener.Start();
        _accepting = AcceptAsync();
    }

    /// <summary>The listener's port: the destination port of every generated flow.</summary>
    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Connections made so far.</summary>
    public int Count
    {
        get
        {
            lock (_clientPorts)
            {
                return _clientPorts.Count;
            }
        }
    }

    /// <summary>The client ports of the connections made so far.</summary>
    public IReadOnlyList<uint> ClientPorts
    {
        get
        {
            lock (_clientPorts)
            {
                return [.. _clientPorts];
            }
        }
    }

    /// <summary>Starts a listener and makes <paramref name="perSecond"/> connections a second until stopped.</summary>
    public static SteadyConnections Start(int perSecond)
    {
        var traffic = new SteadyConnections();
        traffic._connecting = traffic.ConnectAsync(TimeSpan.FromSeconds(1.0 / perSecond));
        return traffic;
    }

    /// <summary>Starts a listener that connects only when asked (<see cref="ConnectAsync(int)"/>).</summary>
    public static SteadyConnections Idle() => new();

    /// <summary>Makes <paramref name="count"/> connections now, one after another.</summary>
    public async Task ConnectAsync(int count)
    {
        for (var i = 0; i < count; i++)
        {
            await ConnectOnceAsync();
        }
    }

    /// <summary>Stops making connections and waits for the last one; returns how many were made.</summary>
    public async Task<int> StopAsync()
    {
        // The listener keeps accepting: a connection still in its queue is accepted and closed normally.
        await _stopConnecting.CancelAsync();
        await _connecting;
        return Count;
    }

    private async Task ConnectAsync(TimeSpan interval)
    {
        using var timer = new PeriodicTimer(interval);
        try
        {
            while (await timer.WaitForNextTickAsync(_stopConnecting.Token))
            {
                await ConnectOnceAsync();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task ConnectOnceAsync()
    {
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, Port);
        lock (_clientPorts)
        {
            _clientPorts.Add((uint)((IPEndPoint)client.Client.LocalEndPoint!).Port);
        }
    }

    private async Task AcceptAsync()
    {
        try
        {
            while (true)
            {
                using var accepted = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
        _stopConnecting.Dispose();
    }
}
