using System.Globalization;

namespace FlowSec.Tests.KernelMatrix;

/// <summary>One program as the loader reported it (a <c>PROG</c> line).</summary>
internal sealed record ProgramResult(
    string Unit,
    string Name,
    string Section,
    string Load,
    string Attach,
    int Xlated,
    int Verified,
    int Jited,
    ulong RunCount,
    ulong RunNs)
{
    public bool Loaded => Load == "ok";

    public bool Attached => Attach == "ok";

    public bool Fired => RunCount > 0;
}

/// <summary>A <c>FIRE</c> line: what one trigger did, as key=value pairs.</summary>
internal sealed record FireFact(string Signal, IReadOnlyDictionary<string, string> Values)
{
    public string this[string key] => Values.TryGetValue(key, out var v)
        ? v
        : throw new KeyNotFoundException($"FIRE {Signal} has no {key}= (have: {string.Join(' ', Values.Keys)})");

    public int Int(string key) => int.Parse(this[key], CultureInfo.InvariantCulture);

    /// <summary>The port of an <c>ip:port</c> value.</summary>
    public ushort Port(string key) => ushort.Parse(this[key][(this[key].LastIndexOf(':') + 1)..], CultureInfo.InvariantCulture);

    /// <summary>Source and destination ports of an <c>ip:port&gt;ip:port</c> value.</summary>
    public (ushort Source, ushort Destination) Flow(string key)
    {
        string[] ends = this[key].Split('>');
        return (ushort.Parse(ends[0][(ends[0].LastIndexOf(':') + 1)..], CultureInfo.InvariantCulture),
            ushort.Parse(ends[1][(ends[1].LastIndexOf(':') + 1)..], CultureInfo.InvariantCulture));
    }

    /// <summary>The address of an <c>ip:port</c> value.</summary>
    public string Address(string key) => this[key][..this[key].LastIndexOf(':')];
}

/// <summary>A <c>COST</c> line: a signal's workload timed with one probe program attached.</summary>
internal sealed record CostResult(string Program, string Signal, int Iterations, double AttachedNs, double BaselineNs)
{
    public double OverheadNs => AttachedNs - BaselineNs;
}

/// <summary>Everything the loader printed for one unit (one object, or a subset of its programs).</summary>
internal sealed class UnitRun(string label, string objectPath, string mode)
{
    public string Label { get; } = label;

    public string ObjectPath { get; } = objectPath;

    public string Mode { get; } = mode;

    public List<ProgramResult> Programs { get; } = [];

    public List<(string Map, byte[] Data)> Records { get; } = [];

    public List<(string Map, byte[] Key, byte[] Value)> Entries { get; } = [];

    public Dictionary<(string Map, int Index), ulong> Counters { get; } = [];

    public List<FireFact> Fires { get; } = [];

    public List<CostResult> Costs { get; } = [];

    /// <summary>Per signal: the timing repeated with nothing attached (two best-of values); their gap is the noise floor.</summary>
    public Dictionary<string, (double A, double B)> Noise { get; } = [];

    public Dictionary<string, List<string>> Logs { get; } = [];

    /// <summary><c>HELPER</c> lines of a <c>choose=</c> unit: helper name → "yes", "no" or the probe's error.</summary>
    public Dictionary<string, string> Helpers { get; } = [];

    /// <summary>The <c>CHOSE</c> line of a <c>choose=</c> unit: the program loaded, and the first missing helper ("-" when none).</summary>
    public (string Program, string Missing)? Chosen { get; set; }

    public long LoadMs { get; set; }

    public long? Ms { get; set; }

    public IEnumerable<byte[]> RecordsOf(string map) => Records.Where(r => r.Map == map).Select(r => r.Data);

    public IEnumerable<(byte[] Key, byte[] Value)> EntriesOf(string map) =>
        Entries.Where(e => e.Map == map).Select(e => (e.Key, e.Value));

    /// <summary>The first trigger of <paramref name="signal"/> (units fire once; "each" units once per program).</summary>
    public FireFact? Fire(string signal) => Fires.FirstOrDefault(f => f.Signal == signal);
}

/// <summary>The parsed output of one kmatrix-loader run (host or guest).</summary>
internal sealed class LoaderOutput
{
    public Dictionary<string, string> Facts { get; } = [];

    /// <summary><c>enum skb_drop_reason</c> of the kernel that ran the loader.</summary>
    public List<KeyValuePair<string, long>> DropReasonEnum { get; } = [];

    public Dictionary<string, UnitRun> Units { get; } = [];

    public bool Done { get; private set; }

    public int? ExitCode { get; private set; }

    public int Pid => int.Parse(Facts["pid"], CultureInfo.InvariantCulture);

    public string Comm => Facts["comm"];

    public string Fact(string name) => Facts.TryGetValue(name, out var v) ? v : "?";

    public static LoaderOutput Parse(string text)
    {
        var output = new LoaderOutput();
        foreach (string rawLine in text.Split('\n'))
        {
            string line = rawLine.TrimEnd('\r');
            string[] f = line.Split(' ');
            if (f.Length == 0)
            {
                continue;
            }
            UnitRun? unit = f.Length > 1 && output.Units.TryGetValue(f[1], out var u) ? u : null;
            switch (f[0])
            {
                case "FACT" when f.Length >= 3:
                    output.Facts[f[1]] = string.Join(' ', f[2..]);
                    break;
                case "ENUM" when f.Length == 4 && f[1] == "skb_drop_reason":
                    output.DropReasonEnum.Add(new(f[2], long.Parse(f[3], CultureInfo.InvariantCulture)));
                    break;
                case "UNIT" when f.Length >= 4:
                    output.Units[f[1]] = new UnitRun(f[1], Value(f[2]), Value(f[3]));
                    break;
                case "PROG" when unit is not null && f.Length >= 11:
                    var kv = Pairs(f[3..]);
                    unit.Programs.Add(new ProgramResult(
                        f[1], f[2], kv["section"], kv["load"], kv["attach"],
                        int.Parse(kv["xlated"], CultureInfo.InvariantCulture),
                        int.Parse(kv["verified"], CultureInfo.InvariantCulture),
                        int.Parse(kv["jited"], CultureInfo.InvariantCulture),
                        ulong.Parse(kv["run_cnt"], CultureInfo.InvariantCulture),
                        ulong.Parse(kv["run_ns"], CultureInfo.InvariantCulture)));
                    break;
                case "FIRE" when unit is not null && f.Length >= 3:
                    unit.Fires.Add(new FireFact(f[2], Pairs(f[3..])));
                    break;
                case "RECORD" when unit is not null && f.Length == 4:
                    unit.Records.Add((f[2], Convert.FromHexString(f[3])));
                    break;
                case "ENTRY" when unit is not null && f.Length == 5:
                    unit.Entries.Add((f[2], Convert.FromHexString(f[3]), Convert.FromHexString(f[4])));
                    break;
                case "COUNTER" when unit is not null && f.Length == 5:
                    unit.Counters[(f[2], int.Parse(f[3], CultureInfo.InvariantCulture))] = ulong.Parse(f[4], CultureInfo.InvariantCulture);
                    break;
                case "COST" when unit is not null && f.Length >= 7:
                    var c = Pairs(f[3..]);
                    unit.Costs.Add(new CostResult(
                        f[2], c["signal"], int.Parse(c["iters"], CultureInfo.InvariantCulture),
                        double.Parse(c["attached_ns"], CultureInfo.InvariantCulture),
                        double.Parse(c["baseline_ns"], CultureInfo.InvariantCulture)));
                    break;
                case "NOISE" when unit is not null && f.Length >= 6:
                    var n = Pairs(f[3..]);
                    unit.Noise[f[2]] = (double.Parse(n["a_ns"], CultureInfo.InvariantCulture), double.Parse(n["b_ns"], CultureInfo.InvariantCulture));
                    break;
                case "VLOG" when unit is not null && f.Length >= 3:
                    if (!unit.Logs.TryGetValue(f[2], out var log))
                    {
                        unit.Logs[f[2]] = log = [];
                    }
                    log.Add(string.Join(' ', f[3..]));
                    break;
                case "HELPER" when unit is not null && f.Length == 5:
                    unit.Helpers[f[3]] = f[4];
                    break;
                case "CHOSE" when unit is not null && f.Length == 4:
                    unit.Chosen = (f[2], Value(f[3]));
                    break;
                case "TIME" when unit is not null && f.Length >= 4:
                    unit.LoadMs += long.Parse(Value(f[3]), CultureInfo.InvariantCulture);
                    break;
                case "END" when unit is not null && f.Length >= 3:
                    unit.Ms = long.Parse(Value(f[2]), CultureInfo.InvariantCulture);
                    break;
                case "DONE":
                    output.Done = true;
                    break;
                case "EXIT" when f.Length == 2 && int.TryParse(f[1], CultureInfo.InvariantCulture, out int rc):
                    output.ExitCode = rc;
                    break;
            }
        }
        return output;
    }

    private static string Value(string pair) => pair[(pair.IndexOf('=') + 1)..];

    private static Dictionary<string, string> Pairs(IEnumerable<string> fields)
    {
        var d = new Dictionary<string, string>();
        foreach (string field in fields)
        {
            int eq = field.IndexOf('=');
            if (eq > 0)
            {
                d[field[..eq]] = field[(eq + 1)..];
            }
        }
        return d;
    }
}
