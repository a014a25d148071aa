namespace FlowSec.Api.Grpc;

/// <summary>The gRPC status codes FlowSec uses (numbering from the gRPC spec).</summary>
public enum GrpcStatusCode
{
    /// <summary>Success.</summary>
    Ok = 0,
    /// <summary>The caller cancelled.</summary>
    Cancelled = 1,
    /// <summary>An error with no better code.</summary>
    Unknown = 2,
    /// <summary>The request is malformed.</summary>
    InvalidArgument = 3,
    /// <summary>The deadline passed before the call completed.</summary>
    DeadlineExceeded = 4,
    /// <summary>A message or buffer limit was exceeded.</summary>
    ResourceExhausted = 8,
    /// <summary>The method or feature is not implemented.</summary>
    Unimplemented = 12,
    /// <summary>An invariant broke on the server.</summary>
    Internal = 13,
    /// <summary>The service is not reachable right now; retry.</summary>
    Unavailable = 14,
    /// <summary>The caller did not present valid credentials.</summary>
    Unauthenticated = 16,
}

/// <summary>A call ended with a non-OK gRPC status.</summary>
public sealed class GrpcException : Exception
{
    /// <summary>Creates an exception carrying a status and a human-readable message.</summary>
    public GrpcException(GrpcStatusCode status, string message, Exception? inner = null)
        : base($"{status}: {message}", inner)
    {
        Status = status;
        Detail = message;
    }

    /// <summary>The gRPC status code.</summary>
    public GrpcStatusCode Status { get; }

    /// <summary>The message without the status prefix (sent as grpc-message).</summary>
    public string Detail { get; }
}
