using FlowSec.Api.V1;
using FlowSec.Sensor.Export;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// The lifecycle every BPF capture shares: load its object off the host's start path, read its
/// per-CPU kernel counters, drain what the kernel collects until the host stops, and report one
/// <see cref="CapturePath"/> per program. A capture that cannot load (no BTF, no privileges,
/// verifier rejection) logs why, reports its path as "unavailable" with the reason and leaves the
/// sensor running. Stopping destroys the links and unloads everything; the last kernel counter
/// values are kept.
/// </summary>
/// <remarks>
/// <see cref="RingBufferCapture"/> drains a ring buffer on its own thread; <see cref="MapDrainCapture"/>
/// reads aggregate maps on a timer.
/// </remarks>
public abstract class BpfCapture : BackgroundService, ICaptureStatus
{
    private static readonly TimeSpan ClockResyncInterval = TimeSpan.FromMinutes(1);

    private readonly string _signal;
    private readonly string _objectName;
    private readonly string _captureName;
    private readonly string _countersMap;
    private readonly ILogger _logger;
    // Guards the kernel counter map against being read while the object is closed.
    private readonly Lock _kernelCountersLock = new();
    private PerCpuCounters? _kernelCounters;
    private BpfObject? _loaded;
    private long _runsLost;
    private volatile IReadOnlyList<BpfProgramState>? _programs;
    private volatile string _unavailableReason = "not started";
    private long _nextClockSyncNs;

    /// <summary>
    /// <paramref name="signal"/> names the capture in status ("tcp"), <paramref name="objectName"/>
    /// is the embedded object it loads, <paramref name="captureName"/> names it in logs
    /// ("TCP capture") and <paramref name="countersMap"/> is its per-CPU counter map.
    /// </summary>
    private protected BpfCapture(string signal, string objectName, string captureName, string countersMap, ILogger logger)
    {
        _signal = signal;
        _objectName = objectName;
        _captureName = captureName;
        _countersMap = countersMap;
        _logger = logger;
    }

    /// <summary>Kernel ids of the programs while loaded (for tests that check nothing is left behind).</summary>
    internal IReadOnlyList<uint> ProgramIds => _programs?.Select(p => p.KernelId).ToArray() ?? [];

    /// <summary>Whether what the kernel collects is being drained (a program counts as active only then).</summary>
    private protected abstract bool IsDraining { get; }

    /// <summary>The reason a loaded, attached program reports while nothing drains it.</summary>
    private protected abstract string DrainStoppedReason { get; }

    /// <summary>The path reported while the object is not loaded.</summary>
    private protected virtual string UnavailablePath => "";

    /// <summary>One fresh <see cref="CapturePath"/> per program ("unavailable" with the reason when not loaded).</summary>
    public IEnumerable<CapturePath> CapturePaths()
    {
        var programs = _programs;
        if (programs is null)
        {
            return new[]
            {
                new CapturePath { Signal = _signal, Program = _objectName, Path = UnavailablePath, State = "unavailable", Reason = _unavailableReason },
            };
        }
        bool draining = IsDraining;
        return programs.Select(p => new CapturePath
        {
            Signal = _signal,
            Program = p.Name,
            Path = ProgramPath(p),
            State = p.Attached && draining ? "active" : "unavailable",
            Reason = p.Error ?? (draining ? ProgramReason(p) : DrainStoppedReason),
        }).ToArray();
    }

    /// <summary>
    /// Adds this capture's counters (listed in its remarks) to <paramref name="counters"/>, and
    /// <c>&lt;signal&gt;_program_runs_lost</c>: runs of its programs the kernel skipped (see
    /// <see cref="BpfObject.SkippedRuns"/>), which no other counter can see.
    /// </summary>
    public void AddCounters(IDictionary<string, ulong> counters)
    {
        ReadKernelCounters();
        AddCaptureCounters(counters);
        counters[$"{_signal}_program_runs_lost"] = (ulong)Interlocked.Read(ref _runsLost);
    }

    /// <inheritdoc />
    protected sealed override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Loading runs the verifier (tens to hundreds of ms): keep it off the host's start path.
        await Task.Yield();
        BpfObject? bpf = null;
        try
        {
            bpf = Load();
            lock (_kernelCountersLock)
            {
                _kernelCounters = new PerCpuCounters(bpf.MapFd(_countersMap));
                _loaded = bpf;
            }
            StartDraining(bpf);
            _programs = bpf.Programs;
            LogActive();
            await DrainUntilStoppedAsync(stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            // Never take the sensor down: report the path as unavailable instead.
            _unavailableReason = e.Message;
            _logger.LogError(e, "{Capture} unavailable: {Reason}", _captureName, e.Message);
        }
        finally
        {
            StopDraining();
            ReadKernelCounters();
            lock (_kernelCountersLock)
            {
                _kernelCounters = null;
                _loaded = null;
            }
            _programs = null;
            _unavailableReason = stoppingToken.IsCancellationRequested ? "stopped" : _unavailableReason;
            bpf?.Dispose();
        }
    }

    /// <summary>Prepares the capture and loads its object; throws when it cannot (the path then reports why).</summary>
    private protected abstract BpfObject Load();

    /// <summary>Starts draining the loaded object (its counter map is already open).</summary>
    private protected abstract void StartDraining(BpfObject bpf);

    /// <summary>Logs that the capture is active, with what it runs on.</summary>
    private protected abstract void LogActive();

    /// <summary>Drains until <paramref name="stoppingToken"/> is cancelled.</summary>
    private protected abstract Task DrainUntilStoppedAsync(CancellationToken stoppingToken);

    /// <summary>Stops draining (after a failed start too); runs before the object is closed.</summary>
    private protected abstract void StopDraining();

    /// <summary>Copies the kernel's counters from <paramref name="kernel"/> into the capture's fields.</summary>
    private protected abstract void CopyKernelCounters(PerCpuCounters kernel);

    /// <summary>Adds the capture's own counters, after the kernel's have been read.</summary>
    private protected abstract void AddCaptureCounters(IDictionary<string, ulong> counters);

    /// <summary>Why an active <paramref name="program"/> is the one in use (e.g. chosen among alternatives); empty by default.</summary>
    private protected virtual string ProgramReason(BpfProgramState program) => "";

    /// <summary>The path <paramref name="program"/> reports in status (its section unless the capture says more).</summary>
    private protected virtual string ProgramPath(BpfProgramState program) => program.Section;

    /// <summary>
    /// True once a minute (the first call included), when the kernel-to-Unix clock offset should
    /// be read again: the wall clock may have been stepped since.
    /// </summary>
    private protected bool ClockResyncDue(long nowNs)
    {
        if (nowNs < _nextClockSyncNs)
        {
            return false;
        }
        _nextClockSyncNs = nowNs + ClockResyncInterval.Ticks * 100;
        return true;
    }

    // Read on demand (a status snapshot every few seconds; a few syscalls), the last values kept after stop.
    private void ReadKernelCounters()
    {
        try
        {
            lock (_kernelCountersLock)
            {
                if (_kernelCounters is null)
                {
                    return;
                }
                CopyKernelCounters(_kernelCounters);
                if (_loaded is not null)
                {
                    Interlocked.Exchange(ref _runsLost, (long)_loaded.SkippedRuns());
                }
            }
        }
        catch (BpfException e)
        {
            _logger.LogWarning("Reading {Capture} kernel counters failed: {Error}", _captureName, e.Message);
        }
    }
}
