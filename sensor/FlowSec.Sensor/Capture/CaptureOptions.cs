namespace FlowSec.Sensor.Capture;

/// <summary>Settings of the kernel capture (bind from configuration or set in code).</summary>
public sealed class CaptureOptions
{
    /// <summary>Node name stamped on every event; defaults to the host name.</summary>
    public string Node { get; set; } = Environment.MachineName;

    /// <summary>
    /// How often the ring buffers are drained, in ms. Programs submit without wake-ups, so this
    /// bounds the delay between a kernel event and its decoding. Default 5.
    /// </summary>
    public int DrainIntervalMs { get; set; } = 5;

    /// <summary>
    /// How often a connection that is still open is reported as "established" (and how often the
    /// kernel's socket table is read to find them). Default 10 s.
    /// </summary>
    public TimeSpan ActiveFlowReportInterval { get; set; } = TimeSpan.FromSeconds(10);
}
