using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Export;

/// <summary>
/// The encoded identity fields of endpoints (pid 3, process 4, cgroup_id 5, container_id 6,
/// workload 7, pod 8, namespace 9, labels 10: contiguous in field order, so the bytes sit between an
/// endpoint's ip/port and its names exactly as Google.Protobuf writes them), kept per identity:
/// a node's flows name the same few processes and workloads thousands of times, and transcoding
/// their strings to UTF-8 was most of an event's encoding cost. One table per thread (each capture
/// thread and the exporter encode on their own: <see cref="EventEncoding"/> owns one), direct-mapped, small.
/// </summary>
/// <remarks>
/// A hit needs the pid and cgroup id equal and every string the very same object as when the bytes
/// were made (labels: the same keys and values, in the same order). The enricher and
/// <c>CommNames</c> hand out one string per workload, pod, label and process name, so the check is a
/// few reference compares; an equal string that is another object only costs a miss. Nothing needs
/// invalidating: strings never change, so an exec (a new process name), a pod's new labels or
/// another cgroup give other references and miss.
/// </remarks>
internal sealed class EndpointIdentityBytes
{
    private const int Slots = 256;

    private readonly Entry?[] _entries = new Entry?[Slots];

    /// <summary>Hits and misses on this thread's table (for tests and benches).</summary>
    internal long Hits { get; private set; }

    /// <inheritdoc cref="Hits"/>
    internal long Misses { get; private set; }

    /// <summary>Whether <paramref name="ep"/> has no identity field set (nothing to write or cache).</summary>
    internal static bool IsEmpty(Endpoint ep) =>
        ep.Pid == 0 && ep.CgroupId == 0 && ep.Process.Length == 0 && ep.ContainerId.Length == 0 && ep.Workload.Length == 0
        && ep.Pod.Length == 0 && ep.Namespace.Length == 0 && ep.Labels.Count == 0;

    /// <summary>The identity fields of <paramref name="ep"/> as written on the wire; valid until the next call on this thread.</summary>
    internal ReadOnlySpan<byte> For(Endpoint ep)
    {
        int slot = (int)((ep.Pid * 0x9E3779B1u) ^ (uint)ep.CgroupId ^ (uint)(ep.CgroupId >> 32)
            ^ (uint)(ep.Workload.Length * 31) ^ (uint)(ep.Process.Length * 7)) & (Slots - 1);
        var entry = _entries[slot] ??= new Entry();
        if (entry.Matches(ep))
        {
            Hits++;
        }
        else
        {
            Misses++;
            entry.Fill(ep);
        }
        return entry.Bytes.AsSpan(0, entry.Length);
    }

    private sealed class Entry
    {
        private uint _pid;
        private ulong _cgroupId;
        private string? _process;
        private string? _containerId;
        private string? _workload;
        private string? _pod;
        private string? _namespace;
        // Keys and values in map order: key, value, key, value...
        private string[] _labels = [];
        private int _labelCount;

        public byte[] Bytes { get; private set; } = new byte[128];

        public int Length { get; private set; }

        public bool Matches(Endpoint ep)
        {
            if (_process is null || ep.Pid != _pid || ep.CgroupId != _cgroupId
                || !ReferenceEquals(ep.Process, _process) || !ReferenceEquals(ep.Workload, _workload)
                || !ReferenceEquals(ep.ContainerId, _containerId) || !ReferenceEquals(ep.Pod, _pod)
                || !ReferenceEquals(ep.Namespace, _namespace) || ep.Labels.Count != _labelCount)
            {
                return false;
            }
            if (_labelCount == 0)
            {
                return true;
            }
            int i = 0;
            foreach (var (key, value) in ep.Labels)
            {
                if (!ReferenceEquals(key, _labels[i]) || !ReferenceEquals(value, _labels[i + 1]))
                {
                    return false;
                }
                i += 2;
            }
            return true;
        }

        public void Fill(Endpoint ep)
        {
            (_pid, _cgroupId) = (ep.Pid, ep.CgroupId);
            (_process, _containerId, _workload, _pod, _namespace) = (ep.Process, ep.ContainerId, ep.Workload, ep.Pod, ep.Namespace);
            _labelCount = ep.Labels.Count;
            if (_labels.Length < 2 * _labelCount)
            {
                _labels = new string[2 * _labelCount];
            }
            if (_labelCount != 0)
            {
                int i = 0;
                foreach (var (key, value) in ep.Labels)
                {
                    _labels[i++] = key;
                    _labels[i++] = value;
                }
            }
            int size = Size(ep);
            if (Bytes.Length < size)
            {
                Bytes = new byte[size];
            }
            var writer = new ProtoSpanWriter(Bytes);
            Write(ref writer, ep);
            Length = writer.Position;
        }
    }

    /// <summary>The size of <paramref name="ep"/>'s identity fields on the wire.</summary>
    internal static int Size(Endpoint ep)
    {
        int size = ProtoSpanWriter.VarintFieldSize(ep.Pid) + ProtoSpanWriter.StringFieldSize(ep.Process)
            + ProtoSpanWriter.VarintFieldSize(ep.CgroupId) + ProtoSpanWriter.StringFieldSize(ep.ContainerId)
            + ProtoSpanWriter.StringFieldSize(ep.Workload) + ProtoSpanWriter.StringFieldSize(ep.Pod)
            + ProtoSpanWriter.StringFieldSize(ep.Namespace);
        // Guarded: enumerating a map allocates an enumerator even when it is empty.
        if (ep.Labels.Count == 0)
        {
            return size;
        }
        foreach (var (key, value) in ep.Labels)
        {
            int entry = LabelEntrySize(key, value);
            size += 1 + ProtoSpanWriter.VarintSize((uint)entry) + entry;
        }
        return size;
    }

    /// <summary>Writes <paramref name="ep"/>'s identity fields (3-10) as Google.Protobuf does.</summary>
    internal static void Write(ref ProtoSpanWriter output, Endpoint ep)
    {
        output.VarintField(24, ep.Pid);
        output.StringField(34, ep.Process);
        output.VarintField(40, ep.CgroupId);
        output.StringField(50, ep.ContainerId);
        output.StringField(58, ep.Workload);
        output.StringField(66, ep.Pod);
        output.StringField(74, ep.Namespace);
        if (ep.Labels.Count == 0)
        {
            return;
        }
        foreach (var (key, value) in ep.Labels)
        {
            // A map entry is a message of key (1) and value (2); like the generated codec, an empty one is left out.
            output.Tag(82);
            output.Varint((uint)LabelEntrySize(key, value));
            output.StringField(10, key);
            output.StringField(18, value);
        }
    }

    private static int LabelEntrySize(string key, string value) =>
        ProtoSpanWriter.StringFieldSize(key) + ProtoSpanWriter.StringFieldSize(value);
}
