using System.Reflection;
using FlowSec.Sensor.Capture;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Sdk;

namespace FlowSec.Tests.Sensor.Files;

/// <summary>
/// One row of a file-capture theory in <see cref="FileResultMode"/> <c>mode</c>. A task-work row
/// is skipped, visibly and with the reason, on a kernel whose verifier refuses the task-work
/// kfunc from tracepoints (some 6.18 builds name it in BTF but refuse the call): the sensor then
/// runs the exit-tracepoint rows' path, which the same theory checks.
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
public sealed class ResultModeDataAttribute : DataAttribute
{
    private static readonly Lazy<string?> TaskWorkRefusal = new(ProbeTaskWork);
    private readonly object[] _row;

    /// <summary>A row whose first value is the mode, followed by <paramref name="more"/>.</summary>
    public ResultModeDataAttribute(FileResultMode mode, params object[] more)
    {
        _row = [mode, .. more];
        if (mode == FileResultMode.TaskWork && TaskWorkRefusal.Value is { } why)
        {
            Skip = $"this kernel cannot run the task-work set: {why}";
        }
    }

    /// <inheritdoc />
    public override IEnumerable<object[]> GetData(MethodInfo testMethod) => [_row];

    /// <summary>Null when the task-work programs load here, else why not.</summary>
    internal static string? TaskWorkRefusalReason => TaskWorkRefusal.Value;

    private static string? ProbeTaskWork()
    {
        if (!FileCapture.KernelHasTaskWork())
        {
            return "the kernel has no " + FileCapture.TaskWorkKfunc;
        }
        try
        {
            using var bpf = BpfObject.LoadEmbedded(FileCapture.ObjectName, NullLogger.Instance, name => name.StartsWith("tw_", StringComparison.Ordinal));
            return null;
        }
        catch (BpfException e)
        {
            return e.Message;
        }
    }
}
