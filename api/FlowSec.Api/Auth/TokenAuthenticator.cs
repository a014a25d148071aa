using System.Security.Cryptography;
using System.Text;

namespace FlowSec.Api.Auth;

/// <summary>
/// Checks the bearer token every sensor and CLI call presents to the relay. The token is a
/// random secret that <c>flowsec up</c> writes to a root-only file.
/// </summary>
public sealed class TokenAuthenticator(string token)
{
    private readonly byte[] _expected = Encoding.UTF8.GetBytes("Bearer " + token);

    /// <summary>True when the Authorization header carries the expected token (constant-time compare).</summary>
    public bool IsAuthorized(string authorizationHeader) =>
        CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(authorizationHeader), _expected);
}

/// <summary>Reads and creates the shared token file.</summary>
public static class TokenFile
{
    /// <summary>Reads the token from a file, trimming whitespace; throws with the path when unreadable or empty.</summary>
    public static string Read(string path)
    {
        var token = File.ReadAllText(path).Trim();
        if (token.Length == 0)
        {
            throw new InvalidOperationException($"token file {path} is empty");
        }
        return token;
    }

    /// <summary>Returns the token in <paramref name="path"/>, creating a random one (mode 0600) if the file does not exist.</summary>
    public static string ReadOrCreate(string path)
    {
        if (File.Exists(path))
        {
            return Read(path);
        }
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var token = Convert.ToHexString(RandomNumberGenerator.GetBytes(32)).ToLowerInvariant();
        using (var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        {
            stream.Write(Encoding.UTF8.GetBytes(token + "\n"));
        }
        return token;
    }
}
