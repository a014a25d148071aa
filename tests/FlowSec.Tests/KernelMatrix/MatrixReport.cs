using System.Globalization;
using System.Text;
using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.KernelMatrix;

/// <summary>What one kernel's run proved, and what it did not.</summary>
internal sealed class KernelVerdict
{
    public required KernelRun Run { get; init; }

    public List<CheckResult> Checks { get; } = [];

    /// <summary>Reasons the matrix fails on this kernel.</summary>
    public List<string> Failures { get; } = [];

    /// <summary>Allowed gaps, reported but not failures (a hook the kernel lacks).</summary>
    public List<string> Notes { get; } = [];

    /// <summary>"host 6.18" or the guest's series ("6.1", "6.12").</summary>
    public string Label => Run.Kernel.IsHost ? $"host {Series(Run.Output?.Fact("release") ?? Run.Kernel.Release)}" : Run.Kernel.Name;

    private static string Series(string release) => string.Join('.', release.Split('-')[0].Split('.').Take(2));

    /// <summary>Judges one run: every program of every sensor unit loads, attaches and fires; every field check passes.</summary>
    public static KernelVerdict Of(KernelRun run, IReadOnlyList<string> units)
    {
        var v = new KernelVerdict { Run = run };
        string k = v.Label;
        if (run.Error is not null)
        {
            v.Failures.Add($"{k}: {run.Error}");
        }
        var output = run.Output;
        if (output is null)
        {
            return v;
        }
        foreach (string spec in units)
        {
            string label = spec[..spec.IndexOf('=')];
            if (!output.Units.TryGetValue(label, out var unit))
            {
                v.Failures.Add($"{k}: unit {label} did not run");
                continue;
            }
            if (unit.Mode == "each")
            {
                continue; // the capture-path probes are measurements, not requirements
            }
            if (unit.Programs.Count == 0)
            {
                v.Failures.Add($"{k}: {label}: no program reported (object failed to open?)");
            }
            if (unit.Chosen is { } chosen)
            {
                // The loader's choice must be the sensor's: same helpers, same rule.
                var sensor = DnsEgressPrograms.Choose(DnsEgressMode.Auto, h => unit.Helpers.GetValueOrDefault(h.Name) == "yes");
                if (chosen.Program != sensor.Program)
                {
                    v.Failures.Add($"{k}: {label}: the loader chose {chosen.Program}, the sensor's chooser {sensor.Program}");
                }
            }
            foreach (var p in unit.Programs)
            {
                string what = $"{k}: {label}/{p.Name} ({p.Section})";
                if (p.Load.StartsWith(HelperSkip, StringComparison.Ordinal))
                {
                    string helper = p.Load[HelperSkip.Length..];
                    if (unit.Helpers.GetValueOrDefault(helper) == "no")
                    {
                        v.Notes.Add($"{k}: {label}: {p.Name} not loaded, kernel lacks helper bpf_{helper} in {p.Section.Split('/')[0]} (the chooser loads {unit.Chosen?.Program} there)");
                    }
                    else
                    {
                        v.Failures.Add($"{what}: skipped although the helper probe says bpf_{helper} is {unit.Helpers.GetValueOrDefault(helper) ?? "not probed"}");
                    }
                    continue;
                }
                if (p.Load.StartsWith("skip:no-", StringComparison.Ordinal))
                {
                    string kfunc = p.Load["skip:no-".Length..];
                    if (output.Fact("kfunc_" + kfunc) == "no")
                    {
                        string note = $"{k}: {label}: not loaded, the kernel has no {kfunc} (the other program set serves this kernel):";
                        int i = v.Notes.FindIndex(n => n.StartsWith(note, StringComparison.Ordinal));
                        if (i < 0)
                        {
                            v.Notes.Add($"{note} {p.Name}");
                        }
                        else
                        {
                            v.Notes[i] += $", {p.Name}";
                        }
                    }
                    else
                    {
                        v.Failures.Add($"{what}: skipped although the kernel has {kfunc}");
                    }
                    continue;
                }
                if (!p.Loaded)
                {
                    string log = unit.Logs.TryGetValue(p.Name, out var lines)
                        ? string.Join(" | ", lines.Where(l => !l.StartsWith("libbpf:", StringComparison.Ordinal) && !l.StartsWith("--", StringComparison.Ordinal) && !l.StartsWith("processed", StringComparison.Ordinal)).TakeLast(2))
                        : "";
                    string? need = spec.Split(':').FirstOrDefault(o => o.StartsWith("need=", StringComparison.Ordinal))?["need=".Length..];
                    if (need is not null && MatrixReport.RefusesKfunc(unit, p))
                    {
                        // The kernel names the kfunc but its verifier refuses the call from this program
                        // type (6.18 builds differ): the sensor then loads the other program set, which
                        // the matrix checks as its own unit on the same kernel.
                        string note = $"{k}: {label}: the kernel has {need} but refuses it here ({log}); the sensor uses the other program set:";
                        int i = v.Notes.FindIndex(n => n.StartsWith(note, StringComparison.Ordinal));
                        if (i < 0)
                        {
                            v.Notes.Add($"{note} {p.Name}");
                        }
                        else
                        {
                            v.Notes[i] += $", {p.Name}";
                        }
                        continue;
                    }
                    v.Failures.Add($"{what}: load {p.Load}: {log}");
                    continue;
                }
                if (p.Attach.StartsWith("skip:", StringComparison.Ordinal))
                {
                    v.Notes.Add($"{what}: attach {p.Attach}");
                    continue;
                }
                if (!p.Attached)
                {
                    v.Failures.Add($"{what}: attach {p.Attach}");
                    continue;
                }
                if (!p.Fired)
                {
                    v.Failures.Add($"{what}: attached but never ran during the triggers");
                }
            }
        }
        v.Checks.AddRange(RecordChecks.For(output));
        foreach (var c in v.Checks.Where(c => !c.Passed))
        {
            v.Failures.Add($"{k}: {c.Unit}: {c.Name}: {c.Detail}");
        }
        return v;
    }

    /// <summary>The load status of a choose= alternative not loaded because its program type lacks a helper.</summary>
    internal const string HelperSkip = "skip:no-helper-";
}

/// <summary>Writes docs/kernel-matrix.md from the runs.</summary>
internal static class MatrixReport
{
    // The sensor programs that capture each probed signal (unit/program), for the capture-path tables.
    private static readonly (string Signal, string Title, string[] SensorPrograms)[] Signals =
    [
        ("tcp", "TCP state changes", ["tcp_lifecycle/handle_inet_sock_set_state"]),
        ("exec", "process exec", ["process/handle_exec"]),
        ("exit", "process exit", ["process/handle_exit"]),
        ("open", "file open", ["file-taskwork/tw_enter_openat", "file-exitpair/enter_openat", "file-exitpair/exit_openat"]),
        ("udp", "UDP / DNS packets", ["udp_flows/udp_egress", "dns/dns_egress", "dns/dns_egress_task_read"]),
        ("drop", "packet drops", ["drops/handle_kfree_skb"]),
    ];

    public static string Render(IReadOnlyList<KernelVerdict> verdicts, TimeSpan total, DateTimeOffset when)
    {
        var sb = new StringBuilder();
        void Line(string s = "") => sb.Append(s).Append('\n');
        string[] labels = verdicts.Select(v => v.Label).ToArray();

        Line("# Kernel matrix");
        Line();
        Line($"Written by the test `FlowSec.Tests.KernelMatrix.KernelMatrixTests` on {when.UtcDateTime:yyyy-MM-dd HH:mm} UTC; do not edit by hand.");
        Line("Rerun: `dotnet test tests/FlowSec.Tests --filter \"FullyQualifiedName~FlowSec.Tests.KernelMatrix\"` (root, qemu-system-x86, busybox-static, libbpf-dev; the");
        Line("kernel packages are cached in `.cache/kernels/`). How it works: [tests/kernel-matrix/README.md](../tests/kernel-matrix/README.md).");
        Line();
        Line("Every BPF object embedded in the sensor is loaded, attached and made to fire by a static loader");
        Line("(`tests/kernel-matrix/loader.c`) natively on the host and in Debian kernels booted under qemu (TCG).");
        Line("The records each program leaves are decoded on the host with the sensor's own decoders and compared");
        Line("field by field with what the loader did: CO-RE offsets and C# mirrors proven per kernel.");
        Line();
        Line($"**Result: {(verdicts.All(v => v.Failures.Count == 0) ? "every program passes on every kernel" : $"{verdicts.Sum(v => v.Failures.Count)} failure(s), listed below")}.** Whole matrix: {total.TotalSeconds:0} s.");
        Line();

        Line("## Kernels");
        Line();
        Line("| kernel | release | where | BTF | kprobes | BPF LSM | task-work kfunc | bpf_stats | run time |");
        Line("|---|---|---|---|---|---|---|---|---|");
        foreach (var v in verdicts)
        {
            var o = v.Run.Output;
            string f(string name) => o?.Fact(name) ?? "?";
            string lsm = o is null ? "?" : f("lsm") == "-" ? "securityfs not mounted" : f("lsm").Split(',').Contains("bpf") ? "yes" : "no";
            Line($"| {v.Label} | `{f("release")}` | {(v.Run.Kernel.IsHost ? "native" : "qemu TCG, 1 vCPU")} | {f("btf")} | {f("kprobe_events")} | {lsm} | {f("kfunc_" + MatrixRunner.TaskWorkKfunc)} | {f("bpf_stats")} | {v.Run.Duration.TotalSeconds:0.0} s |");
        }
        Line();
        Line("Run time: for guests, initramfs build + boot + everything below + power off.");
        Line();

        Line("## Programs: load · attach · fired · verified instructions");
        Line();
        Line("Cell: `load · attach · runs during the triggers · instructions the verifier processed (xlated)`;");
        Line("\"kernel lacks the kfunc\": the task-work set needs `" + MatrixRunner.TaskWorkKfunc + "`, absent from that kernel's BTF, so it is not");
        Line("loaded there (the exit-pair set is what serves that kernel); \"kernel refuses the kfunc\": the kernel has it but its verifier");
        Line("refuses the call from a tracepoint (EPERM, \"failed callback verification\"), and the sensor falls back to the exit-pair set");
        Line("the same way. \"kernel lacks helper\": that kernel's cgroup_skb programs");
        Line("may not call the helper, so the sensor loads the task-read egress program there instead (see \"Chosen path\").");
        Line("The triggers: a loopback TCP connection with data both ways, a DNS query and answer over UDP port 53 and over TCP,");
        Line("an exec of `/bin/true`, a child that `_exit(7)`s, create/open/openat2/creat/rename/renameat/renameat2/");
        Line("unlink/unlinkat under a watched directory in `/etc`, a refused TCP connection and a datagram to a closed");
        Line("UDP port (both dropped by the kernel: `NO_SOCKET`).");
        Line();
        Line($"| unit | program | hook | {string.Join(" | ", labels)} |");
        Line($"|---|---|---|{string.Concat(labels.Select(_ => "---|"))}");
        var rows = verdicts.SelectMany(v => v.Run.Output?.Units.Values.Where(u => u.Mode != "each").SelectMany(u => u.Programs.Select(p => (u.Label, p.Name, p.Section))) ?? [])
            .Distinct().ToList();
        // A program only some kernels load (a chosen alternative) stays with its unit's rows.
        var unitOrder = verdicts.SelectMany(v => (IEnumerable<string>?)v.Run.Output?.Units.Keys ?? []).Distinct().ToList();
        rows = rows.OrderBy(r => unitOrder.IndexOf(r.Label)).ToList();
        foreach (var (unit, prog, section) in rows)
        {
            var cells = verdicts.Select(v =>
            {
                var p = v.Run.Output?.Units.GetValueOrDefault(unit)?.Programs.FirstOrDefault(x => x.Name == prog);
                var u = v.Run.Output?.Units.GetValueOrDefault(unit);
                return p is null ? "–" : u is not null && !p.Loaded && RefusesKfunc(u, p) ? "– kernel refuses the kfunc (EPERM)" : Cell(p);
            });
            Line($"| {unit} | `{prog}` | `{section}` | {string.Join(" | ", cells)} |");
        }
        Line();

        Line("## Records decoded and checked per unit");
        Line();
        Line("Checks passed / run, with the sensor's decoders (`TcpRecordDecoder`, `DnsRecordDecoder` + `DnsParser`,");
        Line("`ProcessRecordDecoder`, `FileRecordDecoder`, the `FsUdpFlow*` / `FsDrop*` mirrors and `DropReasons` built from");
        Line("the kernel's own `enum skb_drop_reason`). A unit whose programs did not load has nothing to check (–).");
        Line();
        Line($"| unit | {string.Join(" | ", labels)} |");
        Line($"|---|{string.Concat(labels.Select(_ => "---|"))}");
        var checkedUnits = verdicts.SelectMany(v => v.Run.Output?.Units.Values.Where(u => RecordChecks.Decodes(u.ObjectPath)).Select(u => u.Label) ?? []).Distinct();
        foreach (string unit in checkedUnits)
        {
            var cells = verdicts.Select(v =>
            {
                var c = v.Checks.Where(x => x.Unit == unit).ToList();
                return c.Count == 0 ? "–" : c.All(x => x.Passed) ? $"{c.Count}/{c.Count} ✓" : $"**{c.Count(x => x.Passed)}/{c.Count}**";
            });
            Line($"| {unit} | {string.Join(" | ", cells)} |");
        }
        Line();
        Line("<details><summary>Every check with its measured value, per kernel</summary>");
        Line();
        Line($"| unit | check | {string.Join(" | ", labels)} |");
        Line($"|---|---|{string.Concat(labels.Select(_ => "---|"))}");
        var checkRows = verdicts.SelectMany(v => v.Checks.Select(c => (c.Unit, c.Name))).Distinct();
        foreach (var (unit, name) in checkRows)
        {
            var cells = verdicts.Select(v =>
            {
                var c = v.Checks.FirstOrDefault(x => x.Unit == unit && x.Name == name);
                return c is null ? "–" : (c.Passed ? "✓ " : "✗ ") + Escape(c.Detail);
            });
            Line($"| {unit} | {Escape(name)} | {string.Join(" | ", cells)} |");
        }
        Line();
        Line("</details>");
        Line();

        Line("## Capture paths per signal (measured)");
        Line();
        Line("One empty program per hook type (`tests/kernel-matrix/probes.bpf.c`), each loaded, attached and fired");
        Line("alone; then the signal's operation (loopback connect+accept+close, fork+exec+wait, open+close of");
        Line("`/dev/null`, UDP send+receive, UDP send to a closed port) is timed with the probe attached against the same");
        Line("loop unhooked, detached and attached runs alternating (best of 5 runs of ~20 ms each).");
        Line("Cell: `✓` fired, then the added cost per operation.");
        Line("Under TCG every number is inflated and noisy (an emulated instruction costs ~10-50× a native one);");
        Line("compare paths within a column, not across columns. ✗ gives the measured reason (EPERM: refused,");
        Line("ENOENT: no such hook, ESRCH: no such function in BTF).");
        Line();
        Line($"| signal | path | {string.Join(" | ", labels)} |");
        Line($"|---|---|{string.Concat(labels.Select(_ => "---|"))}");
        var probeNames = verdicts.SelectMany(v => v.Run.Output?.Units.GetValueOrDefault("probes")?.Programs.Select(p => p.Name) ?? []).Distinct().ToList();
        foreach (var (signal, title, _) in Signals)
        {
            foreach (string name in probeNames.Where(n => n.StartsWith(signal + "__", StringComparison.Ordinal)))
            {
                var cells = verdicts.Select(v =>
                {
                    var probes = v.Run.Output?.Units.GetValueOrDefault("probes");
                    var p = probes?.Programs.FirstOrDefault(x => x.Name == name);
                    if (p is null)
                    {
                        return "–";
                    }
                    if (!p.Loaded)
                    {
                        return $"✗ load {Errno(p.Load)}";
                    }
                    if (!p.Attached)
                    {
                        return $"✗ attach {Errno(p.Attach)}";
                    }
                    if (!p.Fired)
                    {
                        return "✗ never fired";
                    }
                    var cost = probes!.Costs.FirstOrDefault(c => c.Program == name);
                    return cost is null ? "✓" : $"✓ {Ns(cost.OverheadNs)} ({100 * cost.OverheadNs / cost.BaselineNs:+0;-0;0}%)";
                });
                Line($"| {title} | {name[(signal.Length + 2)..].Replace('_', ' ')} | {string.Join(" | ", cells)} |");
            }
        }
        Line();
        Line("Noise floor: the same alternating timing with nothing attached on either side; an overhead smaller than");
        Line("it is not a measurement. Per kernel, the cheapest path is named only when it beats the next by more than");
        Line("the noise floor (and 5 % of the operation); otherwise the paths tie.");
        Line();
        Line($"| signal | sensor's hook | {string.Join(" | ", labels.Select(l => l + ": noise → cheapest"))} |");
        Line($"|---|---|{string.Concat(labels.Select(_ => "---|"))}");
        foreach (var (signal, title, sensorPrograms) in Signals)
        {
            var cells = verdicts.Select(v =>
            {
                var probes = v.Run.Output?.Units.GetValueOrDefault("probes");
                if (probes is null)
                {
                    return "–";
                }
                var fired = probes.Costs.Where(c => c.Signal == signal && probes.Programs.Any(p => p.Name == c.Program && p.Fired))
                    .OrderBy(c => c.OverheadNs).ToList();
                if (fired.Count == 0)
                {
                    return "–";
                }
                double noise = probes.Noise.TryGetValue(signal, out var n) ? Math.Abs(n.A - n.B) : double.NaN;
                double margin = Math.Max(noise, 0.05 * fired[0].BaselineNs);
                string Name(CostResult c) => c.Program[(signal.Length + 2)..].Replace('_', ' ');
                string verdict = fired.Count == 1 ? Name(fired[0]) + " (only path)"
                    : fired[1].OverheadNs - fired[0].OverheadNs > margin ? Name(fired[0])
                    : "tie: " + string.Join(", ", fired.Where(c => c.OverheadNs - fired[0].OverheadNs <= margin).Select(Name));
                return $"±{Ns(noise).TrimStart('+')} → {verdict}";
            });
            string used = string.Join(", ", sensorPrograms.Select(sp => Section(verdicts, sp)).Where(h => h.Length > 0).Distinct().Select(h => $"`{h}`"));
            Line($"| {title} | {used} | {string.Join(" | ", cells)} |");
        }
        Line();
        Line("## Chosen path: DNS egress program");
        Line();
        Line("`bpf/dns.bpf.c` has two cgroup_skb/egress programs writing the same record; the sensor loads one");
        Line("(`DnsEgressPrograms.Choose`, from libbpf's helper probe for cgroup_skb; `--Sensor:Dns:EgressProgram` overrides).");
        Line("The `dns` unit above loaded the program the chooser picks on each kernel; `dns-taskread` forces the task-read one");
        Line("everywhere. Cell: helper probe answers, then the program chosen, with its verified instructions (xlated).");
        Line();
        Line($"| | {string.Join(" | ", labels)} |");
        Line($"|---|{string.Concat(labels.Select(_ => "---|"))}");
        foreach (var helper in DnsEgressPrograms.RequiredHelpers)
        {
            Line($"| `{helper}` in cgroup_skb | {string.Join(" | ", verdicts.Select(v => v.Run.Output?.Units.GetValueOrDefault("dns")?.Helpers.GetValueOrDefault(helper.Name) ?? "–"))} |");
        }
        string Instructions(KernelVerdict v, string unit, string prog) =>
            v.Run.Output?.Units.GetValueOrDefault(unit)?.Programs.FirstOrDefault(p => p.Name == prog && p.Loaded) is { } p ? $"{p.Verified} ({p.Xlated})" : "–";
        Line($"| sensor's choice | {string.Join(" | ", verdicts.Select(v => v.Run.Output?.Units.GetValueOrDefault("dns")?.Chosen is { } c ? $"`{c.Program}`" : "–"))} |");
        Line($"| `{DnsEgressPrograms.HelpersProgram}` instructions | {string.Join(" | ", verdicts.Select(v => Instructions(v, "dns", DnsEgressPrograms.HelpersProgram)))} |");
        Line($"| `{DnsEgressPrograms.TaskReadProgram}` instructions | {string.Join(" | ", verdicts.Select(v => Instructions(v, "dns-taskread", DnsEgressPrograms.TaskReadProgram)))} |");
        Line();

        Line("The sensor's objects use only classic tracepoints, tp_btf and cgroup_skb: the hooks every kernel here");
        Line("offers. File results come from BPF task work where the kernel has `" + MatrixRunner.TaskWorkKfunc + "`");
        Line("(one hook per call) and from the sys_exit tracepoint pair elsewhere.");
        Line();

        var failures = verdicts.SelectMany(v => v.Failures).ToList();
        var notes = verdicts.SelectMany(v => v.Notes).ToList();
        Line("## Failures");
        Line();
        if (failures.Count == 0)
        {
            Line("None.");
        }
        foreach (string f in failures)
        {
            Line($"- {Escape(f)}");
        }
        Line();
        Line("## Allowed gaps (reported, not failures)");
        Line();
        if (notes.Count == 0)
        {
            Line("None.");
        }
        foreach (string n in notes)
        {
            Line($"- {Escape(n)}");
        }
        Line();
        var logs = verdicts.SelectMany(v => v.Run.Output?.Units.Values.Where(u => u.Mode != "each")
            .SelectMany(u => u.Logs.Select(l => (Kernel: v.Label, Unit: u.Label, Prog: l.Key, Lines: l.Value))) ?? []).ToList();
        if (logs.Count > 0)
        {
            Line("## Verifier logs of failed loads (last lines)");
            Line();
            foreach (var (kernel, unit, prog, lines) in logs)
            {
                Line($"{kernel}, {unit}/`{prog}`:");
                Line();
                Line("```");
                foreach (string l in lines.Where(l => !l.StartsWith("libbpf: failed to load object", StringComparison.Ordinal)).TakeLast(8))
                {
                    Line(l);
                }
                Line("```");
                Line();
            }
        }
        return sb.ToString();
    }

    private static string Section(IReadOnlyList<KernelVerdict> verdicts, string unitProgram)
    {
        string[] parts = unitProgram.Split('/');
        return verdicts.Select(v => v.Run.Output?.Units.GetValueOrDefault(parts[0])?.Programs.FirstOrDefault(p => p.Name == parts[1]))
            .FirstOrDefault(p => p is not null)?.Section ?? "";
    }

    /// <summary>
    /// Whether the verifier refused <paramref name="p"/> for calling a kfunc the kernel has but does
    /// not allow from this program (EPERM, "failed callback verification"), not for a bug of ours.
    /// </summary>
    internal static bool RefusesKfunc(UnitRun unit, ProgramResult p) =>
        p.Load.Contains("EPERM", StringComparison.Ordinal) && unit.Logs.TryGetValue(p.Name, out var lines) &&
        lines.Any(l => l.Contains("failed callback verification", StringComparison.Ordinal));

    private static string Cell(ProgramResult p)
    {
        if (p.Load.StartsWith(KernelVerdict.HelperSkip, StringComparison.Ordinal))
        {
            return $"– kernel lacks helper bpf_{p.Load[KernelVerdict.HelperSkip.Length..]}";
        }
        if (p.Load.StartsWith("skip:", StringComparison.Ordinal))
        {
            return p.Load.StartsWith("skip:no-", StringComparison.Ordinal) ? "– (kernel lacks the kfunc)" : "– " + p.Load;
        }
        if (!p.Loaded)
        {
            return $"**✗ load {Errno(p.Load)}**";
        }
        string attach = p.Attached ? "✓" : $"**✗ {Errno(p.Attach)}**";
        string fired = p.Fired ? $"✓ {p.RunCount}×" : "**✗ 0×**";
        return $"✓ · {attach} · {fired} · {p.Verified} ({p.Xlated})";
    }

    private static string Errno(string status) => status.Contains(':') ? status[(status.IndexOf(':') + 1)..] : status;

    private static string Ns(double ns) => Math.Abs(ns) >= 1000
        ? string.Create(CultureInfo.InvariantCulture, $"{ns / 1000:+0.0;-0.0;0} µs")
        : string.Create(CultureInfo.InvariantCulture, $"{ns:+0;-0;0} ns");

    private static string Escape(string s) => s.Replace("|", "\\|").Replace("\n", " ");
}
