using System.Security.Cryptography.X509Certificates;
using FlowSec.Api.Auth;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace FlowSec.Relay;

/// <summary>TLS for the relay's gRPC port, bound from "Relay:Tls". Off unless a certificate is set.</summary>
public sealed class RelayTlsOptions
{
    /// <summary>PEM server certificate; set = the gRPC port speaks only TLS (h2 by ALPN).</summary>
    public string Certificate { get; set; } = "";

    /// <summary>PEM private key of <see cref="Certificate"/>; empty = in the certificate file.</summary>
    public string Key { get; set; } = "";

    /// <summary>
    /// PEM CA for client certificates; set = mutual TLS: a client without a certificate signed by
    /// this CA fails the handshake before any gRPC frame (the bearer token is still required after).
    /// </summary>
    public string ClientCa { get; set; } = "";
}

/// <summary>Turns <see cref="RelayTlsOptions"/> into Kestrel's HTTPS settings, reading every file at start.</summary>
public static class RelayTls
{
    /// <summary>
    /// The HTTPS settings, or null when TLS is off. Throws <see cref="InvalidOperationException"/>
    /// naming the file and setting when a file is missing or does not hold what it should.
    /// </summary>
    public static HttpsConnectionAdapterOptions? Build(RelayTlsOptions tls)
    {
        if (tls.Certificate.Length == 0)
        {
            if (tls.ClientCa.Length > 0 || tls.Key.Length > 0)
            {
                throw new InvalidOperationException("--Relay:Tls:ClientCa and --Relay:Tls:Key need --Relay:Tls:Certificate");
            }
            return null;
        }
        HttpsConnectionAdapterOptions https;
        try
        {
            https = new HttpsConnectionAdapterOptions { ServerCertificate = PrivateCa.ReadCertificate(tls.Certificate, tls.Key) };
        }
        catch (InvalidOperationException ex)
        {
            throw new InvalidOperationException($"--Relay:Tls:Certificate {ex.Message}", ex);
        }
        if (tls.ClientCa.Length > 0)
        {
            X509Certificate2Collection roots;
            try
            {
                roots = PrivateCa.ReadRoots(tls.ClientCa);
            }
            catch (InvalidOperationException ex)
            {
                throw new InvalidOperationException($"--Relay:Tls:ClientCa {ex.Message}", ex);
            }
            https.ClientCertificateMode = ClientCertificateMode.RequireCertificate;
            https.ClientCertificateValidation = (client, chain, _) => PrivateCa.Validates(client, roots, chain?.ChainPolicy.ExtraStore);
        }
        return https;
    }
}
