using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace FlowSec.Tests;

/// <summary>A logger that keeps every formatted message, for tests that check what a component told its operator.</summary>
internal class ListLogger : ILogger
{
    /// <summary>The messages logged so far, oldest first.</summary>
    public ConcurrentQueue<string> Messages { get; } = new();

    /// <inheritdoc />
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    /// <inheritdoc />
    public bool IsEnabled(LogLevel logLevel) => true;

    /// <inheritdoc />
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Messages.Enqueue(formatter(state, exception));
}

/// <summary>A <see cref="ListLogger"/> for components that take an <see cref="ILogger{TCategoryName}"/>.</summary>
internal sealed class ListLogger<T> : ListLogger, ILogger<T>;
