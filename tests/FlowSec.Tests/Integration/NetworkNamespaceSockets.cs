using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace FlowSec.Tests.Integration;

/// <summary>
/// TCP connections from inside a test network namespace, made by this test process: the socket is
/// created on a thread that has entered the namespace (a socket stays in the namespace it was
/// created in), so an <see cref="HttpClient"/> here speaks as a host on that namespace's network.
/// </summary>
internal static partial class NetworkNamespaceSockets
{
    private const int CloneNewNet = 0x40000000;

    /// <summary>A handler whose connections are made from inside network namespace <paramref name="ns"/> (a name under /run/netns).</summary>
    public static SocketsHttpHandler Handler(string ns) => new()
    {
        ConnectTimeout = TimeSpan.FromSeconds(5),
        ConnectCallback = async (context, ct) =>
        {
            var socket = Create(ns);
            try
            {
                await socket.ConnectAsync(IPAddress.Parse(context.DnsEndPoint.Host), context.DnsEndPoint.Port, ct);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        },
    };

    /// <summary>A TCP socket in network namespace <paramref name="ns"/>.</summary>
    public static Socket Create(string ns)
    {
        Socket? socket = null;
        Exception? error = null;
        // setns changes the calling thread only: a thread of its own, back home before it ends.
        var thread = new Thread(() =>
        {
            int home = -1, target = -1;
            try
            {
                home = Open("/proc/thread-self/ns/net");
                target = Open($"/run/netns/{ns}");
                Enter(target, ns);
                try
                {
                    socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                }
                finally
                {
                    Enter(home, "the test's own");
                }
            }
            catch (Exception ex)
            {
                error = ex;
            }
            finally
            {
                foreach (var fd in (int[])[home, target])
                {
                    if (fd >= 0)
                    {
                        _ = Close(fd);
                    }
                }
            }
        });
        thread.Start();
        thread.Join();
        return socket ?? throw new InvalidOperationException($"no socket in network namespace {ns}", error);
    }

    private static int Open(string path)
    {
        var fd = OpenRaw(path, 0);
        return fd >= 0 ? fd : throw new IOException($"open {path}: errno {Marshal.GetLastPInvokeError()}");
    }

    private static void Enter(int fd, string what)
    {
        if (SetNs(fd, CloneNewNet) != 0)
        {
            throw new IOException($"setns into {what} network namespace: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    [LibraryImport("libc.so.6", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenRaw(string path, int flags);

    [LibraryImport("libc.so.6", EntryPoint = "setns", SetLastError = true)]
    private static partial int SetNs(int fd, int nstype);

    [LibraryImport("libc.so.6", EntryPoint = "close")]
    private static partial int Close(int fd);
}
