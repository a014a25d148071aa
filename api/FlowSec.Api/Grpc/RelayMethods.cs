namespace FlowSec.Api.Grpc;

/// <summary>The relay's gRPC method paths (package.Service/Method), as defined in relay.proto.</summary>
public static class RelayMethods
{
    /// <summary>Ingest/Push: sensors stream event batches in.</summary>
    public const string Push = "flowsec.v1.Ingest/Push";

    /// <summary>Observer/GetEvents: stored and live events out.</summary>
    public const string GetEvents = "flowsec.v1.Observer/GetEvents";

    /// <summary>Observer/GetStatus: storage, ingest and node state.</summary>
    public const string GetStatus = "flowsec.v1.Observer/GetStatus";

    /// <summary>Observer/Aggregate: counts and bytes per group of stored events.</summary>
    public const string Aggregate = "flowsec.v1.Observer/Aggregate";
}
