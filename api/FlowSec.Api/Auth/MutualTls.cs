using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace FlowSec.Api.Auth;

/// <summary>
/// Trust in FlowSec's own certificate authority: the relay accepts only client certificates it
/// signed, and sensors and the CLI accept only a relay certificate it signed. No system roots are
/// involved, so a certificate from a public CA (or another cluster's CA) is refused.
/// </summary>
public static class PrivateCa
{
    /// <summary>
    /// Reads every certificate of a PEM file; throws <see cref="InvalidOperationException"/> naming
    /// the file when it is unreadable or holds none.
    /// </summary>
    public static X509Certificate2Collection ReadRoots(string caFile)
    {
        var roots = new X509Certificate2Collection();
        Named(caFile, () => roots.ImportFromPemFile(caFile));
        if (roots.Count == 0)
        {
            throw new InvalidOperationException($"{caFile} holds no PEM certificate");
        }
        return roots;
    }

    /// <summary>
    /// Reads a PEM certificate with its key (<paramref name="keyFile"/>, or empty when the key is in
    /// the certificate file); throws <see cref="InvalidOperationException"/> naming the file when
    /// either is unreadable or they do not match.
    /// </summary>
    public static X509Certificate2 ReadCertificate(string certificateFile, string keyFile)
    {
        X509Certificate2? certificate = null;
        Named(certificateFile, () => certificate = X509Certificate2.CreateFromPemFile(certificateFile, keyFile.Length > 0 ? keyFile : null));
        return certificate!;
    }

    private static void Named(string file, Action read)
    {
        try
        {
            read();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
        {
            throw new InvalidOperationException($"{file}: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// True when <paramref name="certificate"/> chains to one of <paramref name="roots"/> and is
    /// valid now. Revocation is not checked: a private CA here publishes no revocation lists; rotate
    /// the CA to revoke.
    /// </summary>
    public static bool Validates(X509Certificate2 certificate, X509Certificate2Collection roots, X509Certificate2Collection? intermediates = null)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(roots);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (intermediates is not null)
        {
            chain.ChainPolicy.ExtraStore.AddRange(intermediates);
        }
        return chain.Build(certificate);
    }
}

/// <summary>
/// The client side of (mutual) TLS to the relay: the CA that signed the relay's certificate and,
/// when the relay asks for one, this client's certificate and key (PEM files). Bound from
/// "Sensor:Tls" in the sensor and from --tls-* in the CLI.
/// </summary>
public sealed class ClientTls
{
    /// <summary>PEM CA the relay's certificate must chain to; empty = the system's roots.</summary>
    public string Ca { get; set; } = "";

    /// <summary>PEM client certificate; empty = none (a relay that requires one refuses the handshake).</summary>
    public string Certificate { get; set; } = "";

    /// <summary>PEM private key of <see cref="Certificate"/>; empty = the key is in the certificate file.</summary>
    public string Key { get; set; } = "";

    /// <summary>True when any file is set, i.e. the caller asked for TLS settings of its own.</summary>
    public bool IsConfigured => Ca.Length > 0 || Certificate.Length > 0;

    /// <summary>
    /// Builds the handshake options, reading the files now so a missing or bad file fails at
    /// start with its name instead of at the first connection.
    /// </summary>
    public SslClientAuthenticationOptions ToSslOptions()
    {
        var options = new SslClientAuthenticationOptions();
        if (Certificate.Length > 0)
        {
            options.ClientCertificates = [PrivateCa.ReadCertificate(Certificate, Key)];
        }
        if (Ca.Length > 0)
        {
            var roots = PrivateCa.ReadRoots(Ca);
            // Host name checks still apply: only chain trust is replaced by the private CA.
            options.RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
                certificate is X509Certificate2 relay
                && (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) == SslPolicyErrors.None
                && PrivateCa.Validates(relay, roots, chain?.ChainPolicy.ExtraStore);
        }
        return options;
    }
}

/// <summary>
/// Creates the PEM files of a private CA for one FlowSec installation: the CA, the relay's
/// server certificate (for 127.0.0.1, ::1, localhost and any extra names) and one client
/// certificate shared by sensors and the CLI. Keys are written mode 0600.
/// </summary>
public static class TlsMaterial
{
    /// <summary>File names inside the directory.</summary>
    public const string CaFile = "ca.pem", RelayCertificateFile = "relay.pem", RelayKeyFile = "relay-key.pem",
        ClientCertificateFile = "client.pem", ClientKeyFile = "client-key.pem";

    /// <summary>True when <paramref name="directory"/> already holds every file.</summary>
    public static bool Exists(string directory) =>
        new[] { CaFile, RelayCertificateFile, RelayKeyFile, ClientCertificateFile, ClientKeyFile }
            .All(f => File.Exists(Path.Combine(directory, f)));

    /// <summary>Writes a new CA, relay and client certificate valid for <paramref name="lifetime"/>.</summary>
    public static void Create(string directory, TimeSpan lifetime, IEnumerable<string>? extraRelayNames = null)
    {
        Directory.CreateDirectory(directory);
        var notBefore = DateTimeOffset.UtcNow.AddMinutes(-5);
        var notAfter = notBefore + lifetime;

        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=FlowSec CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        using var ca = caRequest.CreateSelfSigned(notBefore, notAfter);
        Write(directory, CaFile, ca.ExportCertificatePem(), secret: false);

        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(System.Net.IPAddress.Loopback);
        names.AddIpAddress(System.Net.IPAddress.IPv6Loopback);
        names.AddDnsName("localhost");
        foreach (var name in extraRelayNames ?? [])
        {
            if (System.Net.IPAddress.TryParse(name, out var ip))
            {
                names.AddIpAddress(ip);
            }
            else
            {
                names.AddDnsName(name);
            }
        }
        Issue(directory, ca, caKey, "CN=FlowSec relay", names.Build(), "1.3.6.1.5.5.7.3.1", notBefore, notAfter,
            RelayCertificateFile, RelayKeyFile);
        Issue(directory, ca, caKey, "CN=FlowSec client", null, "1.3.6.1.5.5.7.3.2", notBefore, notAfter,
            ClientCertificateFile, ClientKeyFile);
    }

    private static void Issue(string directory, X509Certificate2 ca, ECDsa caKey, string subject, X509Extension? names,
        string usageOid, DateTimeOffset notBefore, DateTimeOffset notAfter, string certificateFile, string keyFile)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new System.Security.Cryptography.Oid(usageOid)], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        if (names is not null)
        {
            request.CertificateExtensions.Add(names);
        }
        using var issued = request.Create(ca.SubjectName, X509SignatureGenerator.CreateForECDsa(caKey), notBefore, notAfter,
            RandomNumberGenerator.GetBytes(16));
        Write(directory, certificateFile, issued.ExportCertificatePem(), secret: false);
        Write(directory, keyFile, key.ExportPkcs8PrivateKeyPem(), secret: true);
    }

    private static void Write(string directory, string name, string pem, bool secret)
    {
        var path = Path.Combine(directory, name);
        File.Delete(path);
        using var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = secret
                ? UnixFileMode.UserRead | UnixFileMode.UserWrite
                : UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead,
        });
        stream.Write(System.Text.Encoding.ASCII.GetBytes(pem + "\n"));
    }
}
