namespace FlowSec.Sensor.Capture;

/// <summary>Settings of the process capture (bind from configuration or set in code).</summary>
public sealed class ProcessCaptureOptions
{
    /// <summary>Node name stamped on every event; defaults to the host name.</summary>
    public string Node { get; set; } = Environment.MachineName;

    /// <summary>How often the ring buffer is drained, in ms (records are submitted without wake-ups). Default 5.</summary>
    public int DrainIntervalMs { get; set; } = 5;

    /// <summary>Processes the table holds at most (running plus recently exited). Default 65 536.</summary>
    public int MaxProcesses { get; set; } = 65_536;

    /// <summary>
    /// How long an exited process stays in the table: events that name it as parent or actor may
    /// still be on their way (other ring buffers drain on their own schedule). Default 5 s.
    /// </summary>
    public TimeSpan ExitedRetention { get; set; } = TimeSpan.FromSeconds(5);
}
