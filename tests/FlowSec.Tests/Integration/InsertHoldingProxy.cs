using System.Net;
using System.Net.Sockets;
using System.Text;

namespace FlowSec.Tests.Integration;

/// <summary>
/// A TCP proxy in front of ClickHouse's HTTP port that, once armed, lets one INSERT into a given
/// table through but withholds ClickHouse's answer: the rows are stored, the relay never learns it.
/// That is the window at-least-once delivery must survive (kill the relay, or cut the connection,
/// while the answer is held). Everything else passes through untouched. It can also stand for a
/// ClickHouse that is away (<see cref="Refusing"/>).
/// </summary>
public sealed class InsertHoldingProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _targetPort;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<TcpClient> _held = [];
    private readonly Task _accepting;
    private volatile Armed? _armed;
    private volatile bool _refusing;

    /// <summary>Starts proxying 127.0.0.1:(a free port) to 127.0.0.1:<paramref name="targetPort"/>.</summary>
    public InsertHoldingProxy(int targetPort)
    {
        _targetPort = targetPort;
        _listener.Start();
        _accepting = AcceptAsync();
    }

    /// <summary>While true, every new connection is reset at once, as by a ClickHouse that is away.</summary>
    public bool Refusing
    {
        get => _refusing;
        set => _refusing = value;
    }

    /// <summary>The URL to give the relay instead of ClickHouse's.</summary>
    public string Url => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    /// <summary>
    /// Arms the proxy: the next INSERT into <paramref name="qualifiedTable"/> is held. The task
    /// completes when ClickHouse has answered it (so the rows are in) and the answer was withheld.
    /// </summary>
    public Task HoldNextInsert(string qualifiedTable)
    {
        var armed = new Armed(Encoding.ASCII.GetBytes("query=" + Uri.EscapeDataString($"INSERT INTO {qualifiedTable} (")));
        _armed = armed;
        return armed.Answered.Task;
    }

    /// <summary>Breaks the connections whose answer is held: the client sees the connection reset, not the answer.</summary>
    public void CutHeld()
    {
        lock (_held)
        {
            foreach (var client in _held)
            {
                if (client.Client is { } socket) // null once the connection ended by itself
                {
                    socket.LingerState = new LingerOption(true, 0); // RST, as when a server dies
                }
                client.Dispose();
            }
            _held.Clear();
        }
    }

    private async Task AcceptAsync()
    {
        try
        {
            while (true)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                if (Refusing)
                {
                    client.Client.LingerState = new LingerOption(true, 0); // RST
                    client.Dispose();
                    continue;
                }
                _ = Task.Run(() => RelayAsync(client));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
    }

    private async Task RelayAsync(TcpClient client)
    {
        using var _ = client;
        using var server = new TcpClient();
        try
        {
            await server.ConnectAsync(IPAddress.Loopback, _targetPort, _stop.Token);
            var fromClient = client.GetStream();
            var fromServer = server.GetStream();
            Armed? holding = null;
            var up = Task.Run(async () =>
            {
                var buffer = new byte[64 * 1024];
                int n;
                while ((n = await fromClient.ReadAsync(buffer, _stop.Token)) > 0)
                {
                    if (holding is null && _armed is { } armed && buffer.AsSpan(0, n).IndexOf(armed.Marker) >= 0 &&
                        Interlocked.CompareExchange(ref _armed, null, armed) == armed)
                    {
                        holding = armed;
                        lock (_held)
                        {
                            _held.Add(client);
                        }
                    }
                    await fromServer.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
                }
            });
            var down = Task.Run(async () =>
            {
                var buffer = new byte[64 * 1024];
                int n;
                while ((n = await fromServer.ReadAsync(buffer, _stop.Token)) > 0)
                {
                    if (holding is { } held)
                    {
                        held.Answered.TrySetResult(); // the insert is done in ClickHouse; its answer goes nowhere
                        continue;
                    }
                    await fromClient.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
                }
            });
            await Task.WhenAny(up, down);
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // either side went away: so does the other
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        CutHeld();
        _stop.Dispose();
    }

    private sealed class Armed(byte[] marker)
    {
        public byte[] Marker { get; } = marker;

        public TaskCompletionSource Answered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
