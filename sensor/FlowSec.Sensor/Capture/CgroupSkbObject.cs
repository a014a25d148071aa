using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace FlowSec.Sensor.Capture;

/// <summary>
/// An embedded BPF object whose <c>cgroup_skb/*</c> programs are attached to one cgroup v2
/// directory (and so run for every socket in its subtree). <see cref="BpfObject"/> cannot do this:
/// libbpf has no automatic attach for cgroup programs, they need the directory. Attaching goes
/// through BPF links (bpf_link_create), which coexist with other programs on the same cgroup
/// (multi-attach) and are detached when destroyed, so nothing stays behind after dispose.
/// </summary>
internal sealed unsafe class CgroupSkbObject : IDisposable
{
    private readonly List<nint> _links = new();
    private readonly List<BpfProgramState> _programs = new();
    private nint _obj;
    private void* _image;

    private CgroupSkbObject(string name, string cgroupPath)
    {
        Name = name;
        CgroupPath = cgroupPath;
    }

    /// <summary>The embedded resource name, e.g. <c>bpf/udp_flows.bpf.o</c>.</summary>
    public string Name { get; }

    /// <summary>The cgroup v2 directory the programs are attached to.</summary>
    public string CgroupPath { get; }

    /// <summary>Per-program attach state, in object order.</summary>
    public IReadOnlyList<BpfProgramState> Programs => _programs;

    /// <summary>
    /// Opens the embedded object, applies <paramref name="mapSizes"/> (map name → max entries),
    /// loads it and attaches every program to <paramref name="cgroupPath"/>. Throws
    /// <see cref="BpfException"/> when the object cannot load or the directory cannot be opened;
    /// a program that fails to attach is recorded in <see cref="Programs"/>.
    /// </summary>
    public static CgroupSkbObject LoadEmbedded(string resourceName, string cgroupPath, IReadOnlyDictionary<string, uint> mapSizes, ILogger logger)
    {
        using Stream stream = typeof(CgroupSkbObject).Assembly.GetManifestResourceStream(resourceName)
            ?? throw new BpfException($"embedded BPF object '{resourceName}'", 2 /* ENOENT */);
        var image = new byte[stream.Length];
        stream.ReadExactly(image);

        Libbpf.SetLogger(logger);
        var obj = new CgroupSkbObject(resourceName, cgroupPath);
        var warnings = new List<string>();
        Libbpf.CapturedWarnings = warnings;
        try
        {
            obj.Open(image);
            foreach (var (map, size) in mapSizes)
            {
                nint handle = Libbpf.ObjectFindMapByName(obj._obj, map);
                if (handle == 0)
                {
                    throw new BpfException($"map '{map}' in {resourceName}", 2 /* ENOENT */);
                }
                Libbpf.Check(LibbpfMaps.MapSetMaxEntries(handle, size), $"sizing map '{map}' to {size}");
            }
            int loaded = Libbpf.ObjectLoad(obj._obj);
            if (loaded < 0)
            {
                throw new BpfException($"loading {resourceName}{VerifierComplaint(warnings)}", -loaded);
            }
            obj.AttachAll(logger);
            return obj;
        }
        catch
        {
            obj.Dispose();
            throw;
        }
        finally
        {
            Libbpf.CapturedWarnings = null;
        }
    }

    /// <summary>The file descriptor of map <paramref name="name"/>.</summary>
    public int MapFd(string name)
    {
        ObjectDisposedException.ThrowIf(_obj == 0, this);
        nint map = Libbpf.ObjectFindMapByName(_obj, name);
        if (map == 0)
        {
            throw new BpfException($"map '{name}' in {Name}", 2 /* ENOENT */);
        }
        return Libbpf.Check(Libbpf.MapFd(map), $"map '{name}' in {Name}");
    }

    /// <summary>Destroys every link (detaching the programs), then closes the object.</summary>
    public void Dispose()
    {
        foreach (nint link in _links)
        {
            Libbpf.LinkDestroy(link);
        }
        _links.Clear();
        if (_obj != 0)
        {
            Libbpf.ObjectClose(_obj);
            _obj = 0;
        }
        if (_image != null)
        {
            NativeMemory.Free(_image);
            _image = null;
        }
    }

    // The verifier's complaint is the last line before its "processed N insns" summary.
    private static string VerifierComplaint(List<string> warnings)
    {
        foreach (string w in warnings)
        {
            var m = Regex.Match(w, @"prog '([^']+)': -- BEGIN PROG LOAD LOG --\n(.*)-- END PROG LOAD LOG --", RegexOptions.Singleline);
            if (m.Success)
            {
                string[] lines = m.Groups[2].Value.Split('\n', StringSplitOptions.RemoveEmptyEntries);
                int summary = Array.FindLastIndex(lines, l => l.StartsWith("processed ", StringComparison.Ordinal));
                return $": program '{m.Groups[1].Value}' rejected: {(summary > 0 ? lines[summary - 1] : lines.LastOrDefault())}";
            }
        }
        return "";
    }

    private void Open(byte[] image)
    {
        // libbpf may refer to the image until the object is closed.
        _image = NativeMemory.Alloc((nuint)image.Length);
        image.CopyTo(new Span<byte>(_image, image.Length));
        byte[] nameBytes = Encoding.UTF8.GetBytes(Path.GetFileName(Name).Split('.')[0] + "\0");
        fixed (byte* namePtr = nameBytes)
        {
            var opts = new Libbpf.ObjectOpenOpts { Size = (nuint)sizeof(Libbpf.ObjectOpenOpts), ObjectName = namePtr };
            _obj = Libbpf.CheckPointer(Libbpf.ObjectOpenMem(_image, (nuint)image.Length, &opts), $"opening {Name}");
        }
    }

    private void AttachAll(ILogger logger)
    {
        int cgroupFd = LibbpfMaps.Open(CgroupPath, LibbpfMaps.OpenDirectoryFlags);
        if (cgroupFd < 0)
        {
            throw new BpfException($"opening cgroup {CgroupPath}", Marshal.GetLastPInvokeError());
        }
        try
        {
            for (nint prog = Libbpf.ObjectNextProgram(_obj, 0); prog != 0; prog = Libbpf.ObjectNextProgram(_obj, prog))
            {
                string name = Libbpf.ReadString(Libbpf.ProgramName(prog)) ?? "?";
                string section = Libbpf.ReadString(Libbpf.ProgramSectionName(prog)) ?? "?";
                uint id = KernelId(Libbpf.ProgramFd(prog));
                try
                {
                    // The link holds its own reference to the cgroup: the fd can be closed after this.
                    nint link = Libbpf.CheckPointer(LibbpfMaps.ProgramAttachCgroup(prog, cgroupFd),
                        $"attaching program '{name}' ({section}) to {CgroupPath}");
                    _links.Add(link);
                    _programs.Add(new BpfProgramState(name, section, true, null, id));
                    logger.LogInformation("BPF program {Program} attached at {Section} on {Cgroup} (id {Id})", name, section, CgroupPath, id);
                }
                catch (BpfException e)
                {
                    _programs.Add(new BpfProgramState(name, section, false, e.Message, id));
                    logger.LogError("BPF {Error}", e.Message);
                }
            }
        }
        finally
        {
            LibbpfMaps.Close(cgroupFd);
        }
    }

    private static uint KernelId(int progFd)
    {
        if (progFd < 0)
        {
            return 0;
        }
        // struct bpf_prog_info starts { __u32 type; __u32 id; }; the kernel fills only what we ask for.
        uint* info = stackalloc uint[2];
        uint length = 8;
        return Libbpf.ObjGetInfoByFd(progFd, info, &length) == 0 ? info[1] : 0;
    }
}
