using Microsoft.AspNetCore.SignalR;

namespace FlowSec.Relay.Live;

/// <summary>
/// The SignalR hub browsers connect to at <c>/hub/live</c>. Server-to-client only: the UI is
/// read-only, so the hub exposes no methods; <see cref="LiveBroadcaster"/> pushes <c>events</c>.
/// </summary>
public sealed class LiveHub(LiveBroadcaster broadcaster) : Hub
{
    /// <inheritdoc />
    public override Task OnConnectedAsync()
    {
        broadcaster.ClientConnected();
        return base.OnConnectedAsync();
    }

    /// <inheritdoc />
    public override Task OnDisconnectedAsync(Exception? exception)
    {
        broadcaster.ClientDisconnected();
        return base.OnDisconnectedAsync(exception);
    }
}
