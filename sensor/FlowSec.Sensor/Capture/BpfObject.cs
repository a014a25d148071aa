using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace FlowSec.Sensor.Capture;

/// <summary>What happened to one program of a loaded object.</summary>
/// <param name="Name">Program (function) name.</param>
/// <param name="Section">ELF section, which names the attach point (e.g. <c>tp_btf/inet_sock_set_state</c>).</param>
/// <param name="Attached">True when a link is held for it.</param>
/// <param name="Error">Why attaching failed; null when attached.</param>
/// <param name="KernelId">The kernel's program id (as <c>bpftool prog show</c> lists it); 0 when unknown.</param>
internal sealed record BpfProgramState(string Name, string Section, bool Attached, string? Error, uint KernelId);

/// <summary>
/// One BPF object embedded in the sensor assembly, loaded into the kernel with every program
/// attached. Dispose destroys every link and closes the object, which unloads its programs and
/// maps: nothing is left in the kernel after the sensor stops. Programs attach where their
/// section says (libbpf's automatic attach); <see cref="CgroupSkbObject"/> attaches to a cgroup instead.
/// </summary>
internal unsafe class BpfObject : IDisposable
{
    private readonly List<nint> _links = new();
    private readonly List<BpfProgramState> _programs = new();
    private nint _obj;
    private void* _image;

    private protected BpfObject(string name)
    {
        Name = name;
    }

    /// <summary>The object's name: its embedded resource name, e.g. <c>bpf/tcp_lifecycle.bpf.o</c>.</summary>
    public string Name { get; }

    /// <summary>Per-program attach state, in object order.</summary>
    public IReadOnlyList<BpfProgramState> Programs => _programs;

    /// <summary>
    /// Opens the embedded object <paramref name="resourceName"/>, loads it into the kernel and
    /// attaches every program. Throws <see cref="BpfException"/> when the object cannot be opened
    /// or loaded (the verifier log goes to <paramref name="logger"/>); a program that loads but
    /// fails to attach is recorded in <see cref="Programs"/> and does not stop the others.
    /// When <paramref name="loadProgram"/> is given, only the programs it accepts (by name) are
    /// loaded and attached; the others are left out of <see cref="Programs"/>.
    /// </summary>
    public static BpfObject LoadEmbedded(string resourceName, ILogger logger, Func<string, bool>? loadProgram = null) =>
        Load(resourceName, ReadResource(resourceName), logger, loadProgram);

    /// <summary>As <see cref="LoadEmbedded"/>, from an ELF image in memory.</summary>
    internal static BpfObject Load(string name, byte[] image, ILogger logger, Func<string, bool>? loadProgram = null) =>
        Load(new BpfObject(name), image, logger, loadProgram, mapSizes: null);

    /// <summary>
    /// Opens <paramref name="image"/> into <paramref name="obj"/>, selects programs with
    /// <paramref name="loadProgram"/> and sizes maps with <paramref name="mapSizes"/> (map name →
    /// max entries) when given, loads it and attaches every program. On failure the object is
    /// disposed and the <see cref="BpfException"/> names the rejected program when libbpf said which.
    /// </summary>
    private protected static T Load<T>(T obj, byte[] image, ILogger logger, Func<string, bool>? loadProgram,
        IReadOnlyDictionary<string, uint>? mapSizes)
        where T : BpfObject
    {
        Libbpf.SetLogger(logger);
        var warnings = new List<string>();
        Libbpf.CapturedWarnings = warnings;
        try
        {
            obj.Open(image);
            if (loadProgram is not null)
            {
                obj.SelectPrograms(loadProgram);
            }
            foreach (var (map, size) in mapSizes ?? NoMapSizes)
            {
                obj.SizeMap(map, size);
            }
            int loaded = Libbpf.ObjectLoad(obj._obj);
            if (loaded < 0)
            {
                throw new BpfException($"loading {obj.Name}{RejectedProgram(warnings, obj.NamesProgramsThatFailedToLoad)}", -loaded);
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
            // Loading parses the kernel's BTF (tens of MB of small allocations) and frees it again;
            // glibc keeps that memory in its arenas unless asked to give it back, and a node agent
            // should not sit on it for its whole life.
            Libbpf.ReleaseFreedMemory();
        }
    }

    private static readonly IReadOnlyDictionary<string, uint> NoMapSizes = new Dictionary<string, uint>();

    /// <summary>
    /// Whether a load failure without a verifier log still names the program libbpf says failed
    /// to load. Cgroup objects have always reported only verifier rejections; their status text is kept.
    /// </summary>
    private protected virtual bool NamesProgramsThatFailedToLoad => true;

    /// <summary>
    /// bpf_object__load does not say which program failed; libbpf's warnings do. Returns
    /// ": program 'x' rejected: &lt;last verifier line&gt;" so status shows why, or "" if unknown.
    /// </summary>
    private static string RejectedProgram(List<string> warnings, bool namesProgramsThatFailedToLoad)
    {
        foreach (string w in warnings)
        {
            var m = Regex.Match(w, @"prog '([^']+)': -- BEGIN PROG LOAD LOG --\n(.*)-- END PROG LOAD LOG --", RegexOptions.Singleline);
            if (m.Success)
            {
                // The verifier's complaint is the last line before its "processed N insns" summary.
                string[] lines = m.Groups[2].Value.Split('\n', StringSplitOptions.RemoveEmptyEntries);
                int summary = Array.FindLastIndex(lines, l => l.StartsWith("processed ", StringComparison.Ordinal));
                string reason = summary > 0 ? lines[summary - 1] : lines.LastOrDefault() ?? "";
                return $": program '{m.Groups[1].Value}' rejected: {reason}";
            }
        }
        if (!namesProgramsThatFailedToLoad)
        {
            return "";
        }
        foreach (string w in warnings)
        {
            var m = Regex.Match(w, @"prog '([^']+)': failed to load");
            if (m.Success)
            {
                return $": program '{m.Groups[1].Value}' failed to load";
            }
        }
        return "";
    }

    /// <summary>The file descriptor of map <paramref name="name"/>; throws when the object has none.</summary>
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

    /// <summary>Destroys every link (detaching the programs), then closes the object (unloading programs and maps).</summary>
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
            WaitUntilUnloaded();
        }
        // libbpf may refer to the ELF image until the object is closed, so it lives until here.
        if (_image != null)
        {
            NativeMemory.Free(_image);
            _image = null;
        }
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// Closing drops our last references, but the kernel frees a tp_btf program only after an RCU
    /// grace period (its link is released deferred, Linux 6.9+): until then <c>bpftool prog</c>
    /// still lists it. Waits, briefly and bounded, until none of our programs can be found by id,
    /// so that "stopped" means nothing is left in the kernel.
    /// </summary>
    private void WaitUntilUnloaded()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(2);
        foreach (var program in _programs.Where(p => p.KernelId != 0))
        {
            while (true)
            {
                int fd = Libbpf.ProgramFdById(program.KernelId);
                if (fd < 0)
                {
                    break; // ENOENT: gone
                }
                LibbpfMaps.Close(fd);
                if (DateTime.UtcNow > deadline)
                {
                    return;
                }
                Thread.Sleep(1);
            }
        }
    }

    /// <summary>The ELF image embedded in the sensor assembly as <paramref name="resourceName"/>.</summary>
    private protected static byte[] ReadResource(string resourceName)
    {
        using Stream stream = typeof(BpfObject).Assembly.GetManifestResourceStream(resourceName)
            ?? throw new BpfException($"embedded BPF object '{resourceName}'", 2 /* ENOENT */);
        var image = new byte[stream.Length];
        stream.ReadExactly(image);
        return image;
    }

    private void Open(byte[] image)
    {
        _image = NativeMemory.Alloc((nuint)image.Length);
        image.CopyTo(new Span<byte>(_image, image.Length));
        // libbpf names the object's internal maps (.bss, .rodata) after it; the default would be an address.
        string objectName = Path.GetFileName(Name).Split('.')[0];
        byte[] nameBytes = Encoding.UTF8.GetBytes(objectName + "\0");
        fixed (byte* namePtr = nameBytes)
        {
            var opts = new Libbpf.ObjectOpenOpts { Size = (nuint)sizeof(Libbpf.ObjectOpenOpts), ObjectName = namePtr };
            _obj = Libbpf.CheckPointer(Libbpf.ObjectOpenMem(_image, (nuint)image.Length, &opts), $"opening {Name}");
        }
    }

    // Alternative programs of one object (e.g. for kernels with and without a kfunc) must not
    // all load: one that the kernel cannot verify would fail the whole object.
    private void SelectPrograms(Func<string, bool> loadProgram)
    {
        for (nint prog = Libbpf.ObjectNextProgram(_obj, 0); prog != 0; prog = Libbpf.ObjectNextProgram(_obj, prog))
        {
            string name = Libbpf.ReadString(Libbpf.ProgramName(prog)) ?? "";
            Libbpf.Check(LibbpfSelection.ProgramSetAutoload(prog, loadProgram(name)), $"selecting program '{name}' in {Name}");
        }
    }

    private void SizeMap(string map, uint size)
    {
        nint handle = Libbpf.ObjectFindMapByName(_obj, map);
        if (handle == 0)
        {
            throw new BpfException($"map '{map}' in {Name}", 2 /* ENOENT */);
        }
        Libbpf.Check(LibbpfMaps.MapSetMaxEntries(handle, size), $"sizing map '{map}' to {size}");
    }

    /// <summary>Attaches every loaded program with <see cref="AttachProgram"/>, recording each one's state.</summary>
    private protected virtual void AttachAll(ILogger logger)
    {
        string? tracefsError = null;
        bool tracefsChecked = false;
        for (nint prog = Libbpf.ObjectNextProgram(_obj, 0); prog != 0; prog = Libbpf.ObjectNextProgram(_obj, prog))
        {
            if (!LibbpfSelection.ProgramAutoload(prog))
            {
                continue; // left out by SelectPrograms: not loaded, nothing to attach
            }
            string name = Libbpf.ReadString(Libbpf.ProgramName(prog)) ?? "?";
            string section = Libbpf.ReadString(Libbpf.ProgramSectionName(prog)) ?? "?";
            uint id = KernelId(Libbpf.ProgramFd(prog));
            if (!tracefsChecked && (section.StartsWith("tracepoint/", StringComparison.Ordinal) || section.StartsWith("tp/", StringComparison.Ordinal)))
            {
                tracefsError = Tracefs.EnsureMounted(logger);
                tracefsChecked = true;
            }
            try
            {
                nint link = AttachProgram(prog, name, section);
                _links.Add(link);
                _programs.Add(new BpfProgramState(name, section, true, null, id));
                LogAttached(logger, name, section, id);
            }
            catch (BpfException e)
            {
                string reason = tracefsError is null ? e.Message : $"{e.Message} ({tracefsError})";
                _programs.Add(new BpfProgramState(name, section, false, reason, id));
                logger.LogError("BPF {Error}", reason);
            }
        }
    }

    /// <summary>Attaches one loaded program where its section says; returns the link, throws <see cref="BpfException"/>.</summary>
    private protected virtual nint AttachProgram(nint prog, string name, string section) =>
        Libbpf.CheckPointer(Libbpf.ProgramAttach(prog), $"attaching program '{name}' ({section})");

    /// <summary>Logs a successful attach.</summary>
    private protected virtual void LogAttached(ILogger logger, string name, string section, uint id) =>
        logger.LogInformation("BPF program {Program} attached at {Section} (id {Id})", name, section, id);

    /// <summary>
    /// Runs of this object's programs that the kernel skipped, summed (<c>bpf_prog_info.recursion_misses</c>,
    /// Linux 5.12+; 0 where the kernel does not report it). The kernel does not run a tracing
    /// program that would nest in itself on a CPU (tp_btf, raw tracepoints) or, for classic
    /// tracepoints and kprobes, in any other such program: each skipped run may be a lost event.
    /// </summary>
    public ulong SkippedRuns()
    {
        ulong total = 0;
        for (nint prog = _obj == 0 ? 0 : Libbpf.ObjectNextProgram(_obj, 0); prog != 0; prog = Libbpf.ObjectNextProgram(_obj, prog))
        {
            if (LibbpfSelection.ProgramAutoload(prog))
            {
                total += RecursionMisses(Libbpf.ProgramFd(prog));
            }
        }
        return total;
    }

    // struct bpf_prog_info (include/uapi/linux/bpf.h): { __u32 type; __u32 id; ... } and, from
    // Linux 5.12, the __u64 recursion_misses at offset 208.
    private static ulong RecursionMisses(int progFd) => ProgramInfoField<ulong>(progFd, 208);

    private static uint KernelId(int progFd) => ProgramInfoField<uint>(progFd, 4);

    /// <summary>
    /// One field of a program's <c>bpf_prog_info</c>; default when the fd is bad or the kernel's
    /// struct is too short to hold it (an older kernel reports a shorter info_len). The buffer is
    /// zeroed, so the kernel fills plain fields only and copies no instruction dumps.
    /// </summary>
    private static T ProgramInfoField<T>(int progFd, int offset)
        where T : unmanaged
    {
        int size = offset + sizeof(T);
        if (progFd < 0)
        {
            return default;
        }
        byte* info = stackalloc byte[size];
        new Span<byte>(info, size).Clear();
        uint length = (uint)size;
        return Libbpf.ObjGetInfoByFd(progFd, info, &length) == 0 && length >= size ? *(T*)(info + offset) : default;
    }
}
