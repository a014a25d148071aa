using System.Diagnostics;
using System.Text.Json;
using FlowSec.Api.V1;
using FlowSec.Sensor.Export;

namespace FlowSec.Tests.Sensor;

/// <summary>Helpers for tests against the real kernel: bpftool views and condition waits.</summary>
internal static class KernelProbe
{
    /// <summary>Kernel ids of every loaded BPF program.</summary>
    public static HashSet<uint> LoadedProgramIds()
    {
        using var json = JsonDocument.Parse(KernelLayoutTests.Run("bpftool", "-j prog show"));
        return json.RootElement.EnumerateArray().Select(p => p.GetProperty("id").GetUInt32()).ToHashSet();
    }

    /// <summary>The ids of loaded BPF programs whose (possibly truncated) kernel name is a prefix of one of <paramref name="names"/>.</summary>
    public static HashSet<uint> ProgramIdsNamed(IEnumerable<string> names)
    {
        var wanted = names.ToList();
        using var json = JsonDocument.Parse(KernelLayoutTests.Run("bpftool", "-j prog show"));
        // The kernel keeps 15 characters of a name; bpftool shows the full one when BTF has it.
        return json.RootElement.EnumerateArray()
            .Where(p => p.TryGetProperty("name", out var n) && n.GetString() is { Length: > 0 } shown
                        && wanted.Any(w => w.StartsWith(shown, StringComparison.Ordinal)))
            .Select(p => p.GetProperty("id").GetUInt32())
            .ToHashSet();
    }

    /// <summary>Program ids held by BPF links (attached).</summary>
    public static HashSet<uint> LinkedProgramIds()
    {
        using var json = JsonDocument.Parse(KernelLayoutTests.Run("bpftool", "-j link show"));
        return json.RootElement.EnumerateArray()
            .Where(l => l.TryGetProperty("prog_id", out _))
            .Select(l => l.GetProperty("prog_id").GetUInt32())
            .ToHashSet();
    }

    /// <summary>Program ids attached to <paramref name="cgroup"/> itself (as <c>bpftool cgroup show</c> lists them).</summary>
    public static HashSet<uint> CgroupProgramIds(string cgroup)
    {
        // bpftool prints nothing at all (not "[]") for a cgroup without programs.
        string output = KernelLayoutTests.Run("bpftool", $"-j cgroup show {cgroup}");
        if (string.IsNullOrWhiteSpace(output))
        {
            return [];
        }
        using var json = JsonDocument.Parse(output);
        return json.RootElement.EnumerateArray().Select(p => p.GetProperty("id").GetUInt32()).ToHashSet();
    }

    /// <summary>Polls <paramref name="condition"/> until true; throws with <paramref name="what"/> after <paramref name="timeout"/>.</summary>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var watch = Stopwatch.StartNew();
        while (!await condition())
        {
            if (watch.Elapsed > timeout)
            {
                throw new TimeoutException($"timed out after {timeout} waiting for {what}");
            }
            await Task.Delay(20);
        }
    }

    /// <summary>Takes every event queued so far, without waiting.</summary>
    public static List<Event> TakeQueued(SensorEventQueue queue)
    {
        var events = new List<Event>();
        // A queue without an enricher (as tests build it) holds every event as an object.
        while (queue.Reader.TryRead(out var queued))
        {
            events.Add(queued.Event!);
        }
        return events;
    }
}

/// <summary>Counts drain completions so a test can wait for "a full drain after X" without sleeping.</summary>
internal sealed class DrainCounter
{
    private int _count;

    /// <summary>Call from the capture's Drained event.</summary>
    public void OnDrained() => Interlocked.Increment(ref _count);

    /// <summary>Drains completed so far.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>
    /// Waits until <paramref name="drains"/> more drains have completed: with two, at least one
    /// whole drain started after this call.
    /// </summary>
    public Task WaitForMoreAsync(int drains, TimeSpan timeout)
    {
        int target = Count + drains;
        return KernelProbe.WaitUntilAsync(() => Task.FromResult(Count >= target), timeout, $"{drains} more drains");
    }
}
