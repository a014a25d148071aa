using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace FlowSec.Sensor.Capture;

/// <summary>Receives one ring-buffer sample; the span is only valid during the call.</summary>
internal delegate void RingBufferSampleHandler(ReadOnlySpan<byte> sample);

/// <summary>
/// Drains a BPF ring buffer on a dedicated thread. Our programs submit with BPF_RB_NO_WAKEUP
/// (a wake-up per event costs about 6.6 µs here), so epoll alone would rarely report data: each
/// loop polls with a short timeout and then consumes whatever is queued, bounding latency to
/// about one drain interval while records flow (and <see cref="MaxIdleDrainMs"/> after a quiet
/// spell). Handler and <c>afterDrain</c> run on that thread only.
/// </summary>
internal sealed unsafe class RingBufferReader : IDisposable
{
    private readonly RingBufferSampleHandler _handler;
    private readonly Action? _afterDrain;
    private readonly int _drainIntervalMs;
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private GCHandle _self;
    private nint _rb;
    private volatile bool _stopping;
    private long _handlerErrors;

    /// <summary>
    /// Opens the ring buffer map <paramref name="mapFd"/>. Call <see cref="Start"/> to begin draining.
    /// </summary>
    public RingBufferReader(int mapFd, RingBufferSampleHandler handler, int drainIntervalMs, ILogger logger, Action? afterDrain = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(drainIntervalMs);
        _handler = handler;
        _afterDrain = afterDrain;
        _drainIntervalMs = drainIntervalMs;
        _logger = logger;
        _self = GCHandle.Alloc(this);
        _rb = Libbpf.RingBufferNew(mapFd, &OnSample, GCHandle.ToIntPtr(_self), null);
        if (_rb == 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            _self.Free();
            throw new BpfException("ring_buffer__new", errno);
        }
        // Not the thread pool: this loop blocks in epoll for its whole life.
        _thread = new Thread(Run) { IsBackground = true, Name = "fs-ringbuf" };
    }

    /// <summary>Exceptions thrown by the handler (each is logged; the drain goes on).</summary>
    public long HandlerErrors => Interlocked.Read(ref _handlerErrors);

    /// <summary>False once the drain loop has ended (stopped, or failed with a poll error).</summary>
    public bool IsRunning => _thread.IsAlive;

    /// <summary>Starts the drain thread.</summary>
    public void Start() => _thread.Start();

    /// <summary>Stops the thread (within one poll timeout), then frees the ring buffer.</summary>
    public void Dispose()
    {
        _stopping = true;
        if (_thread.ThreadState != ThreadState.Unstarted)
        {
            _thread.Join();
        }
        if (_rb != 0)
        {
            Libbpf.RingBufferFree(_rb);
            _rb = 0;
        }
        if (_self.IsAllocated)
        {
            _self.Free();
        }
    }

    private void Run()
    {
        int timeoutMs = _drainIntervalMs;
        while (!_stopping)
        {
            int polled = Libbpf.RingBufferPoll(_rb, timeoutMs);
            int consumed = Libbpf.RingBufferConsume(_rb);
            int error = polled < 0 ? polled : consumed < 0 ? consumed : 0;
            if (error < 0 && error != -4 /* EINTR */)
            {
                _logger.LogError("Ring buffer drain stopped: {Error}", new BpfException("ring_buffer__poll", -error).Message);
                return;
            }
            AfterDrain();
            timeoutMs = NextTimeout(_drainIntervalMs, timeoutMs, polled > 0 || consumed > 0);
        }
        // Records queued between the last poll and the stop request still count.
        Libbpf.RingBufferConsume(_rb);
        AfterDrain();
    }

    /// <summary>
    /// The poll timeout after a drain: the drain interval while records arrive; doubled after each
    /// drain that found none, up to <see cref="MaxIdleDrainMs"/>. An idle ring then costs a few
    /// wake-ups a second instead of one per interval (the sensor has four rings, and 800 wake-ups a
    /// second were its largest cost on a busy node whose load made no events). A burst does not
    /// wait for the longer timeout: the programs force a wake-up once 256 KiB is queued.
    /// </summary>
    internal static int NextTimeout(int drainIntervalMs, int currentMs, bool gotRecords) =>
        gotRecords ? drainIntervalMs : Math.Min(currentMs * 2, Math.Max(drainIntervalMs, MaxIdleDrainMs));

    /// <summary>Longest poll timeout of an idle ring, in ms: bounds the latency of a lone record.</summary>
    internal const int MaxIdleDrainMs = 50;

    private void AfterDrain()
    {
        try
        {
            _afterDrain?.Invoke();
        }
        catch (Exception e)
        {
            // An unhandled exception on this thread would end the sensor process.
            if (Interlocked.Increment(ref _handlerErrors) <= 10)
            {
                _logger.LogError(e, "Ring buffer after-drain hook failed");
            }
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnSample(void* ctx, void* data, nuint size)
    {
        var reader = (RingBufferReader)GCHandle.FromIntPtr((nint)ctx).Target!;
        try
        {
            reader._handler(new ReadOnlySpan<byte>(data, checked((int)size)));
        }
        catch (Exception e)
        {
            // Never let an exception unwind into libbpf; returning non-zero would also stop the drain.
            if (Interlocked.Increment(ref reader._handlerErrors) <= 10)
            {
                reader._logger.LogError(e, "Ring buffer sample handler failed");
            }
        }
        return 0;
    }
}
