namespace FlowSec.Sensor.Capture;

/// <summary>
/// Reads a BPF per-CPU array of <c>__u64</c> counters: a lookup returns one 8-byte slot per
/// possible CPU, and the counter is their sum.
/// </summary>
internal sealed unsafe class PerCpuCounters
{
    private readonly int _mapFd;
    private readonly ulong[] _values;

    /// <summary>Wraps the per-CPU array map <paramref name="mapFd"/> (owned by its object).</summary>
    public PerCpuCounters(int mapFd)
    {
        _mapFd = mapFd;
        _values = new ulong[Libbpf.Check(Libbpf.NumPossibleCpus(), "libbpf_num_possible_cpus")];
    }

    /// <summary>The counter at <paramref name="index"/>, summed over CPUs.</summary>
    public ulong Sum(uint index)
    {
        fixed (ulong* values = _values)
        {
            Libbpf.Check(Libbpf.MapLookupElem(_mapFd, &index, values), $"reading per-CPU counter {index}");
        }
        ulong sum = 0;
        foreach (ulong v in _values)
        {
            sum += v;
        }
        return sum;
    }
}
