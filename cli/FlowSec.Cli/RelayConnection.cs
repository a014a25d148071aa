using System.CommandLine;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;

namespace FlowSec.Cli;

/// <summary>The options every relay-facing verb shares, and the client they produce.</summary>
public sealed class RelayConnection
{
    /// <summary>--relay: the relay's gRPC address.</summary>
    public Option<string> Relay { get; } = new("--relay")
    {
        Description = "Relay gRPC address",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("FLOWSEC_RELAY") ?? "http://127.0.0.1:4245",
    };

    /// <summary>--token-file: where the bearer token is.</summary>
    public Option<string> TokenFile { get; } = new("--token-file")
    {
        Description = "File with the relay's bearer token (default: .flowsec/token)",
        DefaultValueFactory = _ => FlowSecPaths.Resolve().TokenFile,
    };

    /// <summary>Adds the options to a command.</summary>
    public void AddTo(Command command)
    {
        command.Options.Add(Relay);
        command.Options.Add(TokenFile);
    }

    /// <summary>Creates a client; the token file must be readable.</summary>
    public GrpcClient Connect(ParseResult parse)
    {
        var tokenFile = parse.GetValue(TokenFile)!;
        string token;
        try
        {
            token = Api.Auth.TokenFile.Read(tokenFile);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            throw new GrpcException(GrpcStatusCode.Unauthenticated,
                $"cannot read token file {tokenFile} ({ex.Message}); is FlowSec up, and are you root?");
        }
        return new GrpcClient(new Uri(parse.GetValue(Relay)!), token);
    }
}
