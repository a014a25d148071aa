using FlowSec.Api.V1;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Attribution;

/// <summary>Names learned for IP addresses (from DNS answers).</summary>
public interface IEndpointNames
{
    /// <summary>
    /// The DNS names the address was resolved from, most recent first; empty when none.
    /// <paramref name="address"/> is 4 (IPv4) or 16 (IPv6, IPv4-mapped included) bytes in network order.
    /// </summary>
    IReadOnlyList<string> NamesFor(ReadOnlySpan<byte> address);
}

/// <summary>
/// Gives every endpoint of an event its identity: cgroup id → container/pod/workload, a remote IP
/// that belongs to another local endpoint → that endpoint's identity, a host process → its name,
/// and DNS names for addresses. Called by the capture threads as they queue events
/// (<see cref="TryEnrich"/>) and by the exporter for the events it names; one lock serialises them
/// (the TCP drain thread makes almost all the calls, so it is rarely contended).
/// </summary>
public sealed class EndpointEnricher(CgroupResolver cgroups, IEnumerable<IPodMetadataSource> pods, IEndpointNames? names = null)
{
    private const int MaxEntries = 65_536;
    private readonly Lock _lock = new();
    private readonly Dictionary<ulong, WorkloadIdentity?> _byCgroup = [];
    private readonly Dictionary<ByteString, WorkloadIdentity> _byLocalIp = [];
    // Routable addresses no local endpoint claimed by the end of a batch (see TryName).
    private readonly HashSet<ByteString> _unclaimed = [];
    // Flows come in runs from the same workload: the last cgroup answered skips a lookup per endpoint.
    private ulong _lastCgroupId;
    private WorkloadIdentity? _lastIdentity;

    /// <summary>
    /// Enriches a batch in two passes: first learn which local endpoints own which addresses, then
    /// name every endpoint, so the two sides of a connection closed in the same batch know each other.
    /// </summary>
    public void Enrich(IReadOnlyList<Event> events)
    {
        using var _ = _lock.EnterScope();
        // Indexed: a foreach over the interface would allocate an enumerator and dispatch twice per event.
        for (int i = 0; i < events.Count; i++)
        {
            Event e = events[i];
            Learn(e.Source);
            Learn(e.Destination);
        }
        for (int i = 0; i < events.Count; i++)
        {
            Event e = events[i];
            Name(e.Source);
            Name(e.Destination);
        }
    }

    /// <summary>
    /// Learns which addresses <paramref name="e"/>'s local endpoints own. For a batch built event
    /// by event: learn a run of events first, then <see cref="TryName"/> each.
    /// </summary>
    public void Learn(Event e)
    {
        using var _ = _lock.EnterScope();
        Learn(e.Source);
        Learn(e.Destination);
    }

    /// <summary>
    /// Names <paramref name="e"/>'s endpoints now, unless one of them is an address nothing local
    /// has claimed yet that a later event of the batch might still claim (the other side of a
    /// connection between two local workloads): then it returns false and the event must go
    /// through <see cref="NameAtBatchEnd"/> once the rest of the batch was learned, as
    /// <see cref="Enrich"/> would have named it. Addresses that stayed unclaimed through a whole
    /// batch (remote peers, mostly) do not hold events back again.
    /// </summary>
    public bool TryName(Event e)
    {
        using var _ = _lock.EnterScope();
        return TryNameLocked(e);
    }

    /// <summary>
    /// <see cref="Learn(Event)"/> then <see cref="TryName"/> in one step, for an event offered on
    /// its own (the queue's capture threads): true when it is named, false when it must go through
    /// <see cref="NameAtBatchEnd"/> after the events queued with it were learned.
    /// </summary>
    public bool TryEnrich(Event e)
    {
        using var _ = _lock.EnterScope();
        Learn(e.Source);
        Learn(e.Destination);
        return TryNameLocked(e);
    }

    private bool TryNameLocked(Event e)
    {
        if (Waits(e.Source) || Waits(e.Destination))
        {
            return false;
        }
        Name(e.Source);
        Name(e.Destination);
        return true;
    }

    /// <summary>Names an event <see cref="TryName"/> held back, after the batch's other events were learned.</summary>
    public void NameAtBatchEnd(Event e)
    {
        using var _ = _lock.EnterScope();
        Name(e.Source);
        Name(e.Destination);
        RememberUnclaimed(e.Source);
        RememberUnclaimed(e.Destination);
    }

    private void Learn(Endpoint? ep)
    {
        if (ep is null || ep.CgroupId == 0 || !IsRoutable(ep.Ip) || Identity(ep.CgroupId) is not { } identity)
        {
            return;
        }
        if (_byLocalIp.Count >= MaxEntries)
        {
            _byLocalIp.Clear();
        }
        _byLocalIp[ep.Ip] = identity;
        if (_unclaimed.Count > 0)
        {
            _unclaimed.Remove(ep.Ip); // a new pod took an address seen before as remote
        }
    }

    private bool Waits(Endpoint? ep) =>
        ep is not null && ep.CgroupId == 0 && IsRoutable(ep.Ip) && !_byLocalIp.ContainsKey(ep.Ip) && !_unclaimed.Contains(ep.Ip);

    private void RememberUnclaimed(Endpoint? ep)
    {
        if (ep is null || ep.CgroupId != 0 || !IsRoutable(ep.Ip) || _byLocalIp.ContainsKey(ep.Ip))
        {
            return;
        }
        if (_unclaimed.Count >= MaxEntries)
        {
            _unclaimed.Clear();
        }
        _unclaimed.Add(ep.Ip);
    }

    private void Name(Endpoint? ep)
    {
        if (ep is null)
        {
            return;
        }
        var identity = ep.CgroupId != 0 ? Identity(ep.CgroupId)
            : IsRoutable(ep.Ip) && _byLocalIp.TryGetValue(ep.Ip, out var local) ? local
            : null;
        if (identity is not null)
        {
            Apply(ep, identity);
        }
        else if (ep.Workload.Length == 0 && ep.Process.Length > 0)
        {
            // A host process (root cgroup, or no cgroup known): its name is the best workload name.
            ep.Workload = ep.Process;
        }
        if (names is not null && ep.Ip.Length is 4 or 16 && ep.Names.Count == 0
            && names.NamesFor(ep.Ip.Span) is { Count: > 0 } learned)
        {
            ep.Names.AddRange(learned);
        }
    }

    private static void Apply(Endpoint ep, WorkloadIdentity identity)
    {
        ep.Workload = identity.Workload;
        ep.ContainerId = identity.ContainerId;
        ep.Pod = identity.Pod;
        ep.Namespace = identity.Namespace;
        if (identity.Labels is { } labels)
        {
            foreach (var (key, value) in labels)
            {
                ep.Labels[key] = value;
            }
        }
    }

    private WorkloadIdentity? Identity(ulong cgroupId)
    {
        if (cgroupId == _lastCgroupId)
        {
            return _lastIdentity;
        }
        if (_byCgroup.TryGetValue(cgroupId, out var cached))
        {
            (_lastCgroupId, _lastIdentity) = (cgroupId, cached);
            return cached;
        }
        var path = cgroups.PathOf(cgroupId);
        if (path is null)
        {
            return null; // unknown for now: not cached, so a later rescan can still find it
        }
        var identity = WorkloadNamer.FromCgroupPath(path);
        if (identity is not null)
        {
            foreach (var source in pods)
            {
                if (source.Lookup(identity.ContainerId, identity.PodUid) is { } pod)
                {
                    identity = pod with { ContainerId = identity.ContainerId, PodUid = identity.PodUid };
                    break;
                }
            }
        }
        if (_byCgroup.Count >= MaxEntries)
        {
            _byCgroup.Clear();
        }
        _byCgroup[cgroupId] = identity;
        (_lastCgroupId, _lastIdentity) = (cgroupId, identity);
        return identity;
    }

    // Read from the bytes: this runs for every endpoint of every event, and an IPAddress per call
    // was a visible share of the sensor's CPU at 10 k connections/s.
    internal static bool IsRoutable(ByteString ip)
    {
        ReadOnlySpan<byte> b = ip.Span;
        if (b.Length == 4)
        {
            return b[0] != 127 && b.IndexOfAnyExcept((byte)0) >= 0;
        }
        if (b.Length != 16)
        {
            return false;
        }
        int firstNonZero = b.IndexOfAnyExcept((byte)0);
        if (firstNonZero < 0 || (firstNonZero == 15 && b[15] == 1))
        {
            return false; // :: and ::1
        }
        // ::ffff:127.x.x.x is loopback too (as IPAddress.IsLoopback says).
        bool mapped = firstNonZero == 10 && b[10] == 0xff && b[11] == 0xff;
        return !(mapped && b[12] == 127);
    }
}
