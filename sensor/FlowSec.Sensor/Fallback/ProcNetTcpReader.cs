using System.Globalization;
using System.Net;

namespace FlowSec.Sensor.Fallback;

/// <summary>One row of /proc/net/tcp or /proc/net/tcp6.</summary>
/// <param name="Local">Local address.</param>
/// <param name="LocalPort">Local port.</param>
/// <param name="Remote">Remote address.</param>
/// <param name="RemotePort">Remote port.</param>
/// <param name="State">Kernel TCP state number (1 = ESTABLISHED, 10 = LISTEN).</param>
/// <param name="Inode">Socket inode, to find the owning process.</param>
public readonly record struct ProcNetSocket(IPAddress Local, int LocalPort, IPAddress Remote, int RemotePort, int State, ulong Inode);

/// <summary>
/// Parses /proc/net/tcp{,6}: the kernel prints addresses as hex of the in-memory (network order)
/// words, so each 32-bit group is little-endian on x86. Malformed lines are skipped.
/// </summary>
public static class ProcNetTcpReader
{
    /// <summary>TCP_ESTABLISHED.</summary>
    public const int Established = 1;

    /// <summary>TCP_LISTEN.</summary>
    public const int Listen = 10;

    /// <summary>Parses the text of one file.</summary>
    public static IEnumerable<ProcNetSocket> Parse(string text)
    {
        foreach (var line in text.Split('\n').Skip(1))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 10 || !TryEndpoint(f[1], out var local, out var lport) || !TryEndpoint(f[2], out var remote, out var rport) ||
                !int.TryParse(f[3], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var state) ||
                !ulong.TryParse(f[9], NumberStyles.None, CultureInfo.InvariantCulture, out var inode))
            {
                continue;
            }
            yield return new ProcNetSocket(local, lport, remote, rport, state, inode);
        }
    }

    private static bool TryEndpoint(string text, out IPAddress address, out int port)
    {
        address = IPAddress.None;
        port = 0;
        var colon = text.IndexOf(':');
        if (colon is not (8 or 32) || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out port))
        {
            return false;
        }
        var bytes = new byte[colon / 2];
        for (var word = 0; word < colon / 8; word++)
        {
            if (!uint.TryParse(text.AsSpan(word * 8, 8), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var value))
            {
                return false;
            }
            BitConverter.TryWriteBytes(bytes.AsSpan(word * 4, 4), value); // host (little-endian) order = memory order
        }
        address = new IPAddress(bytes);
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }
        return true;
    }
}
