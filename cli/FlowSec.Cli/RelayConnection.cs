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
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("FLOWSEC_RELAY") ?? UpRelayAddress() ?? "http://127.0.0.1:4245",
    };

    /// <summary>--tls-ca: the CA the relay's certificate must chain to (https:// relays).</summary>
    public Option<string> TlsCa { get; } = new("--tls-ca")
    {
        Description = "PEM CA of the relay's certificate (default for https://: .flowsec/tls/ca.pem when present)",
        DefaultValueFactory = _ => "",
    };

    /// <summary>--tls-cert: this client's certificate for a relay that requires one.</summary>
    public Option<string> TlsCertificate { get; } = new("--tls-cert")
    {
        Description = "PEM client certificate for mutual TLS (default for https://: .flowsec/tls/client.pem when present)",
        DefaultValueFactory = _ => "",
    };

    /// <summary>--tls-key: the key of --tls-cert.</summary>
    public Option<string> TlsKey { get; } = new("--tls-key")
    {
        Description = "PEM key of --tls-cert (default: .flowsec/tls/client-key.pem with the default certificate)",
        DefaultValueFactory = _ => "",
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
        command.Options.Add(TlsCa);
        command.Options.Add(TlsCertificate);
        command.Options.Add(TlsKey);
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
        var relay = new Uri(parse.GetValue(Relay)!);
        ClientTls? tls = null;
        if (relay.Scheme == Uri.UriSchemeHttps)
        {
            tls = TlsFor(parse.GetValue(TlsCa)!, parse.GetValue(TlsCertificate)!, parse.GetValue(TlsKey)!, FlowSecPaths.Resolve().TlsDir);
        }
        else if (parse.GetValue(TlsCa)!.Length > 0 || parse.GetValue(TlsCertificate)!.Length > 0)
        {
            throw new GrpcException(GrpcStatusCode.InvalidArgument, $"--tls-ca/--tls-cert need an https:// relay, not {relay}");
        }
        try
        {
            return new GrpcClient(relay, token, tls: tls);
        }
        catch (InvalidOperationException ex)
        {
            throw new GrpcException(GrpcStatusCode.InvalidArgument, ex.Message);
        }
    }

    /// <summary>The TLS files for an https:// relay: the flags, else what <c>flowsec up --tls</c> made in <paramref name="tlsDir"/>.</summary>
    internal static ClientTls TlsFor(string ca, string certificate, string key, string tlsDir)
    {
        static string Default(string given, string path) => given.Length > 0 ? given : File.Exists(path) ? path : "";
        var tls = new ClientTls
        {
            Ca = Default(ca, Path.Combine(tlsDir, TlsMaterial.CaFile)),
            Certificate = Default(certificate, Path.Combine(tlsDir, TlsMaterial.ClientCertificateFile)),
        };
        tls.Key = key.Length > 0 ? key
            : certificate.Length == 0 && tls.Certificate.Length > 0 ? Default("", Path.Combine(tlsDir, TlsMaterial.ClientKeyFile)) : "";
        return tls;
    }

    // The address the last `flowsec up` on this host serves, so `--tls` needs no flags afterwards.
    private static string? UpRelayAddress()
    {
        try
        {
            var url = File.ReadAllText(FlowSecPaths.Resolve().RelayUrlFile).Trim();
            return url.Length > 0 ? url : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
