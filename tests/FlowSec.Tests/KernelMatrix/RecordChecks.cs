using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Dns;

namespace FlowSec.Tests.KernelMatrix;

/// <summary>One field check on one kernel.</summary>
internal sealed record CheckResult(string Unit, string Name, bool Passed, string Detail);

/// <summary>
/// Decodes what each unit left behind with the sensor's own decoders and compares the fields with
/// what the loader's triggers did (ports, pids, paths, results): the CO-RE relocations and the
/// C# mirrors proven per kernel. Every check is collected, none throws, so the matrix document
/// shows all of them; the test fails afterwards if any failed.
/// </summary>
internal sealed class RecordChecks
{
    private static readonly IPAddress Loopback = IPAddress.Parse("127.0.0.1");

    // x86-64 syscall numbers, as the syscalls tracepoints (and fs_file_record.syscall_nr) number them.
    private static readonly Dictionary<string, uint> SyscallNumbers = new()
    {
        ["open"] = 2,
        ["creat"] = 85,
        ["openat"] = 257,
        ["openat-relative"] = 257,
        ["openat2"] = 437,
        ["rename"] = 82,
        ["renameat"] = 264,
        ["renameat2"] = 316,
        ["unlink"] = 87,
        ["unlinkat"] = 263,
    };

    private readonly LoaderOutput _run;
    private readonly List<CheckResult> _results = [];
    private string _unit = "";

    private RecordChecks(LoaderOutput run)
    {
        _run = run;
    }

    /// <summary>The checks for every unit of <paramref name="run"/> whose object has a decoder.</summary>
    public static List<CheckResult> For(LoaderOutput run)
    {
        var c = new RecordChecks(run);
        foreach (var unit in run.Units.Values)
        {
            c._unit = unit.Label;
            string name = Path.GetFileName(unit.ObjectPath);
            bool anyLoaded = unit.Programs.Any(p => p.Loaded);
            if (!anyLoaded)
            {
                continue; // nothing to decode; the program table says why
            }
            switch (name)
            {
                case "tcp_lifecycle.bpf.o": c.Tcp(unit); break;
                case "dns.bpf.o": c.Dns(unit); break;
                case "udp_flows.bpf.o": c.UdpFlows(unit); break;
                case "drops.bpf.o": c.Drops(unit); break;
                case "process.bpf.o": c.Process(unit); break;
                case "file.bpf.o": c.File(unit); break;
            }
        }
        return c._results;
    }

    /// <summary>Units whose records these checks decode (the others are checked by load/attach/fire only).</summary>
    public static bool Decodes(string objectPath) => Path.GetFileName(objectPath) is
        "tcp_lifecycle.bpf.o" or "dns.bpf.o" or "udp_flows.bpf.o" or "drops.bpf.o" or "process.bpf.o" or "file.bpf.o";

    private void Check(string name, bool passed, string detail) => _results.Add(new CheckResult(_unit, name, passed, detail));

    private void Equal<T>(string name, T actual, T expected) =>
        Check(name, EqualityComparer<T>.Default.Equals(actual, expected), $"{actual}" + (EqualityComparer<T>.Default.Equals(actual, expected) ? "" : $" (expected {expected})"));

    private void Between(string name, ulong actual, ulong min, ulong max) =>
        Check(name, actual >= min && actual <= max, $"{actual}" + (actual >= min && actual <= max ? "" : $" (expected {min}..{max})"));

    private bool Present(string name, bool found, string what)
    {
        Check(name, found, found ? "present" : $"no {what}");
        return found;
    }

    // ---------- TCP: tcp_lifecycle.bpf.o ----------

    private void Tcp(UnitRun unit)
    {
        var fire = unit.Fire("tcp");
        var drop = unit.Fire("drop");
        if (fire is null || drop is null)
        {
            Check("tcp: triggers ran", false, "no FIRE tcp/drop line");
            return;
        }
        ushort sp = fire.Port("server"), cp = fire.Port("client");
        var (refusedSrc, refusedDst) = drop.Flow("tcp");
        var records = new List<TcpRecord>();
        int undecoded = 0;
        foreach (byte[] data in unit.RecordsOf("events"))
        {
            if (TcpRecordDecoder.TryDecode(data, out var r) == DecodeResult.Ok)
            {
                records.Add(r);
            }
            else
            {
                undecoded++;
            }
        }
        Equal("tcp: every record decodes (TcpRecordDecoder)", undecoded, 0);
        Equal("tcp: record size", unit.RecordsOf("events").Select(d => d.Length).DefaultIfEmpty(TcpRecordDecoder.RecordSize).Max(), TcpRecordDecoder.RecordSize);

        TcpRecord? Find(ushort local, ushort remote) =>
            records.Where(r => r.LocalPort == local && r.RemotePort == remote).Select(r => (TcpRecord?)r).FirstOrDefault();

        // One record per socket, at close: none at open.
        Equal("tcp: one record per socket (client)", records.Count(r => r.LocalPort == cp && r.RemotePort == sp), 1);
        Equal("tcp: one record per socket (server)", records.Count(r => r.LocalPort == sp && r.RemotePort == cp), 1);
        var clientClose = Find(cp, sp);
        if (Present("tcp: client close record", clientClose is not null, $"close record {cp}->{sp}"))
        {
            var r = clientClose!.Value;
            ConnectingSide("client close", r);
            Equal("tcp: client close states", $"{r.OldState}->{r.NewState}", "FinWait2->Close");
            Check("tcp: client close start (connect()) <= timestamp", r.StartNs > 0 && r.StartNs <= r.TimestampNs, $"start {r.StartNs} ts {r.TimestampNs}");
            ulong sent = (ulong)fire.Int("client_sent"), received = (ulong)fire.Int("server_sent");
            // bytes_acked and bytes_received count SYN and FIN sequence numbers too.
            Between("tcp: client close bytes_acked (tcp_sock CO-RE)", r.BytesAcked, sent, sent + 2);
            Between("tcp: client close bytes_received (tcp_sock CO-RE)", r.BytesReceived, received, received + 1);
            Between("tcp: client close segs_out", r.SegsOut, 3, 20);
            Between("tcp: client close segs_in", r.SegsIn, 3, 20);
            Between("tcp: client close srtt_us", r.SrttUs, 0, 1_000_000);
            Equal("tcp: client close retransmits", r.TotalRetrans, 0u);
        }
        var serverClose = Find(sp, cp);
        if (Present("tcp: server close record", serverClose is not null, $"close record {sp}->{cp}"))
        {
            var r = serverClose!.Value;
            Equal("tcp: server close tgid (from close())", r.Tgid, (uint)_run.Pid);
            Equal("tcp: server close comm", r.Comm, _run.Comm);
            Equal("tcp: server close states", $"{r.OldState}->{r.NewState}", "LastAck->Close");
            Equal("tcp: server close initiator", r.Initiator, false);
            Equal("tcp: server close first state", r.FirstState, TcpState.SynRecv);
            Check("tcp: server close start (ESTABLISHED) <= timestamp", r.StartNs > 0 && r.StartNs <= r.TimestampNs, $"start {r.StartNs} ts {r.TimestampNs}");
            Check("tcp: server and client sockets differ", r.SockId != (clientClose?.SockId ?? 0), $"{r.SockId:x}");
            ulong sent = (ulong)fire.Int("server_sent"), received = (ulong)fire.Int("client_sent");
            Between("tcp: server close bytes_acked (tcp_sock CO-RE)", r.BytesAcked, sent, sent + 2);
            Between("tcp: server close bytes_received (tcp_sock CO-RE)", r.BytesReceived, received, received + 1);
        }
        var refused = Find(refusedSrc, refusedDst);
        if (Present("tcp: refused connection record", refused is not null, $"close record {refusedSrc}->{refusedDst}"))
        {
            var r = refused!.Value;
            Equal("tcp: refused states", $"{r.OldState}->{r.NewState}", "SynSent->Close");
            Equal("tcp: refused tgid", r.Tgid, (uint)_run.Pid);
            Equal("tcp: refused initiator", r.Initiator, true);
        }
        TcpSockets(unit, fire, records);
        Equal("tcp: ring buffer reserve failures", unit.Counters.GetValueOrDefault(("counters", 0)), 0ul);
    }

    // What the loader's connecting socket carries from connect(): the same in its close record and its table entry.
    private void ConnectingSide(string what, TcpRecord r)
    {
        Equal($"tcp: {what} family", r.Family, AddressFamily.InterNetwork);
        Equal($"tcp: {what} local address", r.LocalAddress.ToIPAddress(), Loopback);
        Equal($"tcp: {what} remote address", r.RemoteAddress.ToIPAddress(), Loopback);
        Equal($"tcp: {what} tgid = loader", r.Tgid, (uint)_run.Pid);
        Equal($"tcp: {what} pid = loader", r.Pid, (uint)_run.Pid);
        Equal($"tcp: {what} comm", r.Comm, _run.Comm);
        Check($"tcp: {what} cgroup id", r.CgroupId != 0, $"{r.CgroupId}");
        Equal($"tcp: {what} initiator", r.Initiator, true);
        Equal($"tcp: {what} first state", r.FirstState, TcpState.SynSent);
    }

    // The connection still open when the maps were dumped: its socket-table entries, decoded as
    // the sensor's interval scan decodes them, and no record yet.
    private void TcpSockets(UnitRun unit, FireFact fire, List<TcpRecord> records)
    {
        if (fire["held_rc"] != "0")
        {
            Check("tcp: held connection opened", false, $"held_rc={fire["held_rc"]}");
            return;
        }
        ushort sp = fire.Port("held_server"), cp = fire.Port("held_client");
        var entries = unit.EntriesOf("sockets").ToList();
        Equal("tcp: socket entry sizes match FsTcpSocket", entries.All(e => e.Key.Length == 8 && e.Value.Length == TcpRecordDecoder.SocketSize), true);
        var open = new List<TcpRecord>();
        foreach (var (key, value) in entries.Where(e => e.Key.Length == 8 && e.Value.Length == TcpRecordDecoder.SocketSize))
        {
            if (TcpRecordDecoder.TryDecode(BitConverter.ToUInt64(key), MemoryMarshal.Read<FsTcpSocket>(value), ulong.MaxValue, out var r) == DecodeResult.Ok)
            {
                open.Add(r);
            }
        }
        Equal("tcp: no record while the connection is open", records.Count(r => (r.LocalPort, r.RemotePort) == (cp, sp) || (r.LocalPort, r.RemotePort) == (sp, cp)), 0);
        Equal("tcp: entries of closed connections are deleted", open.Count(r => r.LocalPort == fire.Port("client") || r.RemotePort == fire.Port("client")), 0);

        TcpRecord? Entry(ushort local, ushort remote) =>
            open.Where(r => r.LocalPort == local && r.RemotePort == remote).Select(r => (TcpRecord?)r).FirstOrDefault();

        var client = Entry(cp, sp);
        if (Present("tcp: client socket entry (established)", client is not null, $"established entry {cp}->{sp}"))
        {
            var r = client!.Value;
            ConnectingSide("client entry", r);
            Check("tcp: client entry start", r.StartNs > 0, $"{r.StartNs}");
        }
        var server = Entry(sp, cp);
        if (Present("tcp: server socket entry (established)", server is not null, $"established entry {sp}->{cp}"))
        {
            var r = server!.Value;
            Equal("tcp: server entry initiator", r.Initiator, false);
            Equal("tcp: server entry first state", r.FirstState, TcpState.SynRecv);
            Equal("tcp: server entry tgid (softirq: not known until close())", r.Tgid, 0u);
            Check("tcp: server entry start", r.StartNs > 0, $"{r.StartNs}");
            Check("tcp: server and client entries differ", r.SockId != (client?.SockId ?? 0), $"{r.SockId:x}");
        }
    }

    // ---------- DNS: dns.bpf.o ----------

    private void Dns(UnitRun unit)
    {
        var fire = unit.Fire("dns");
        if (fire is null || fire["rc"] != "0")
        {
            Check("dns: trigger ran", false, fire is null ? "no FIRE dns line" : $"rc={fire["rc"]}");
            return;
        }
        ushort cp = fire.Port("client");
        var server = IPAddress.Parse(fire.Address("server"));
        int queryLen = fire.Int("query_len"), responseLen = fire.Int("response_len");
        var seen = new List<(DnsObservation Obs, DnsMessage Message, uint ThreadId)>();
        int undecoded = 0;
        foreach (byte[] data in unit.RecordsOf("events"))
        {
            if (DnsRecordDecoder.TryDecode(data, out var obs, out var message) == DecodeResult.Ok)
            {
                // The decoder keeps the process (tgid); the thread id is checked from the raw mirror.
                seen.Add((obs, DnsParser.Parse(message), MemoryMarshal.Read<FsDnsRecord>(data).pid));
            }
            else
            {
                undecoded++;
            }
        }
        Equal("dns: every record decodes (DnsRecordDecoder)", undecoded, 0);
        var ours = seen.Where(s => (s.Obs.SourcePort == cp && s.Obs.DestinationPort == 53) || (s.Obs.SourcePort == 53 && s.Obs.DestinationPort == cp)).ToList();

        void Expect(string what, bool egress, bool query)
        {
            var match = ours.Where(s => s.Obs.Egress == egress && (s.Obs.SourcePort == cp) == query).ToList();
            if (!Present($"dns: {what} record", match.Count > 0, $"{(query ? "query" : "response")} {(egress ? "egress" : "ingress")} record"))
            {
                return;
            }
            var (o, m, threadId) = match[0];
            Equal($"dns: {what} source", $"{o.Source}:{o.SourcePort}", query ? $"{Loopback}:{cp}" : $"{server}:53");
            Equal($"dns: {what} destination", $"{o.Destination}:{o.DestinationPort}", query ? $"{server}:53" : $"{Loopback}:{cp}");
            Equal($"dns: {what} message length", o.MessageLength, query ? queryLen : responseLen);
            Equal($"dns: {what} id", m.Header.Id, (ushort)fire.Int("id"));
            Equal($"dns: {what} is response", m.Header.IsResponse, !query);
            Equal($"dns: {what} question", m.QuestionName, fire["name"]);
            // The loader's sockets live in the loader's cgroup.
            Equal($"dns: {what} cgroup id", o.CgroupId, ulong.Parse(_run.Fact("cgroup_id"), CultureInfo.InvariantCulture));
            if (!query)
            {
                Equal($"dns: {what} answer", m.Answers.FirstOrDefault()?.Address?.ToString(), fire["answer"]);
            }
            // The sender is known on egress; on ingress only for a socket that sent before (the client).
            if (egress || !query)
            {
                Equal($"dns: {what} tgid", o.Tgid, (uint)_run.Pid);
                Equal($"dns: {what} pid (thread; the loader has one)", threadId, (uint)_run.Pid);
                Equal($"dns: {what} comm", o.Comm, _run.Comm);
            }
            else
            {
                Check($"dns: {what} tgid (server socket not seen sending yet)", o.Tgid is 0 || o.Tgid == (uint)_run.Pid, $"{o.Tgid}");
            }
        }
        Expect("query egress", egress: true, query: true);
        Expect("query ingress", egress: false, query: true);
        Expect("response egress", egress: true, query: false);
        Expect("response ingress", egress: false, query: false);
        DnsOverTcp(unit);
    }

    // The same lookup over TCP, the query written in two parts: the segments reassembled with the
    // sensor's DnsTcpFraming, placed by the kernel's stream offsets (bpf_tcp_sock per kernel).
    private void DnsOverTcp(UnitRun unit)
    {
        var fire = unit.Fire("dnstcp");
        if (fire is null || fire["rc"] != "0")
        {
            Check("dns tcp: trigger ran", false, fire is null ? "no FIRE dnstcp line" : $"rc={fire["rc"]}");
            return;
        }
        ushort cp = fire.Port("client");
        var framing = new DnsTcpFraming(maxStreams: 16, maxMessageBytes: 4096);
        var messages = new List<(DnsObservation Obs, DnsMessage Message)>();
        int segments = 0;
        foreach (byte[] data in unit.RecordsOf("events"))
        {
            if (DnsRecordDecoder.TryDecode(data, out var obs, out var segment) != DecodeResult.Ok || obs.Transport != DnsObservation.Tcp
                || !((obs.SourcePort == cp && obs.DestinationPort == 53) || (obs.SourcePort == 53 && obs.DestinationPort == cp)))
            {
                continue;
            }
            segments++;
            framing.OnSegment(obs.SocketCookie, obs.Egress, obs.TcpOffset, obs.MessageLength, segment,
                (m, declared) => messages.Add((obs with { MessageLength = declared }, DnsParser.Parse(m))));
        }
        Check("dns tcp: segments seen", segments >= 4, $"{segments}");
        Equal("dns tcp: messages reassembled", messages.Count, 4);
        Equal("dns tcp: continuations skipped", framing.ContinuationsSkipped, 0L);
        foreach (var (what, egress, query) in new[] { ("query egress", true, true), ("query ingress", false, true), ("response egress", true, false), ("response ingress", false, false) })
        {
            var match = messages.Where(x => x.Obs.Egress == egress && (x.Obs.SourcePort == cp) == query).ToList();
            if (!Present($"dns tcp: {what} message", match.Count == 1, $"{(query ? "query" : "response")} {(egress ? "egress" : "ingress")}"))
            {
                continue;
            }
            var (o, m) = match[0];
            Equal($"dns tcp: {what} length", o.MessageLength, fire.Int(query ? "query_len" : "response_len"));
            Equal($"dns tcp: {what} id", m.Header.Id, (ushort)fire.Int("id"));
            Equal($"dns tcp: {what} question", m.QuestionName, fire["name"]);
            if (!query)
            {
                Equal($"dns tcp: {what} answer", m.Answers.FirstOrDefault()?.Address?.ToString(), fire["answer"]);
            }
            if (egress)
            {
                Equal($"dns tcp: {what} tgid", o.Tgid, (uint)_run.Pid);
            }
        }
    }

    // ---------- UDP flows: udp_flows.bpf.o ----------

    private void UdpFlows(UnitRun unit)
    {
        var dns = unit.Fire("dns");
        var drop = unit.Fire("drop");
        if (dns is null || drop is null || dns["rc"] != "0")
        {
            Check("udp: triggers ran", false, "no successful FIRE dns/drop line");
            return;
        }
        var flows = unit.EntriesOf("udp_flows")
            .Where(e => e.Key.Length == Marshal.SizeOf<FsUdpFlowKey>() && e.Value.Length == Marshal.SizeOf<FsUdpFlowStats>())
            .Select(e => (Key: MemoryMarshal.Read<FsUdpFlowKey>(e.Key), Stats: MemoryMarshal.Read<FsUdpFlowStats>(e.Value)))
            .ToList();
        Equal("udp: key/value sizes match FsUdpFlowKey/FsUdpFlowStats", flows.Count == unit.EntriesOf("udp_flows").Count(), true);
        ushort cp = dns.Port("client");
        var server = IPAddress.Parse(dns.Address("server"));
        int q = dns.Int("query_len"), r = dns.Int("response_len");

        void Expect(string what, IPAddress local, ushort localPort, IPAddress remote, ushort remotePort, int egressBytes, int ingressBytes, FlowDir first)
        {
            var match = flows.Where(f => f.Key.local_port == localPort && f.Key.remote_port == remotePort).ToList();
            if (!Present($"udp: {what} flow", match.Count > 0, $"flow {localPort}->{remotePort}"))
            {
                return;
            }
            var (k, s) = match[0];
            Equal($"udp: {what} local address", k.LocalAddress, local);
            Equal($"udp: {what} remote address", k.RemoteAddress, remote);
            Equal($"udp: {what} family/protocol", $"{k.family}/{k.protocol}", "2/17");
            Equal($"udp: {what} bytes egress", s.bytes_egress, (ulong)egressBytes);
            Equal($"udp: {what} bytes ingress", s.bytes_ingress, (ulong)ingressBytes);
            Equal($"udp: {what} packets egress/ingress", $"{s.packets_egress}/{s.packets_ingress}", $"{(egressBytes > 0 ? 1 : 0)}/{(ingressBytes > 0 ? 1 : 0)}");
            Equal($"udp: {what} first direction", (FlowDir)s.first_dir, first);
            Check($"udp: {what} first <= last", s.first_ns > 0 && s.first_ns <= s.last_ns, $"{s.first_ns}..{s.last_ns}");
            Check($"udp: {what} cgroup id", k.cgroup_id != 0, $"{k.cgroup_id}");
        }
        Expect("dns client", Loopback, cp, server, 53, q, r, FlowDir.Egress);
        Expect("dns server", server, 53, Loopback, cp, r, q, FlowDir.Ingress);
        var (src, dst) = drop.Flow("udp");
        Expect("datagram to closed port", Loopback, src, Loopback, dst, drop.Int("udp_len"), 0, FlowDir.Egress);
        Equal("udp: insert failures", unit.Counters.GetValueOrDefault(("udp_counters", (int)UdpCounter.InsertFailed)), 0ul);
    }

    // ---------- Drops: drops.bpf.o ----------

    private void Drops(UnitRun unit)
    {
        var drop = unit.Fire("drop");
        if (drop is null)
        {
            Check("drops: trigger ran", false, "no FIRE drop line");
            return;
        }
        var reasons = new DropReasons(_run.DropReasonEnum);
        Check("drops: kernel drop reasons read from BTF", _run.DropReasonEnum.Count > 0, $"{_run.DropReasonEnum.Count} reasons");
        var drops = unit.EntriesOf("drops")
            .Where(e => e.Key.Length == Marshal.SizeOf<FsDropKey>() && e.Value.Length == Marshal.SizeOf<FsDropStats>())
            .Select(e => (Key: MemoryMarshal.Read<FsDropKey>(e.Key), Stats: MemoryMarshal.Read<FsDropStats>(e.Value)))
            .ToList();
        Equal("drops: key/value sizes match FsDropKey/FsDropStats", drops.Count == unit.EntriesOf("drops").Count(), true);

        void Expect(string what, string flow, byte protocol, ulong minBytes)
        {
            var (src, dst) = drop.Flow(flow);
            var match = drops.Where(d => d.Key.protocol == protocol && d.Key.sport == src && d.Key.dport == dst).ToList();
            if (!Present($"drops: {what} entry", match.Count > 0, $"drop {src}->{dst} proto {protocol}"))
            {
                return;
            }
            var (k, s) = match[0];
            Equal($"drops: {what} reason", reasons.Name(k.reason), "NO_SOCKET");
            Equal($"drops: {what} source", k.SourceAddress, Loopback);
            Equal($"drops: {what} destination", k.DestinationAddress, Loopback);
            Equal($"drops: {what} family", k.family, (byte)2);
            Equal($"drops: {what} direction (came in through lo)", (FlowDir)k.direction, FlowDir.Ingress);
            Check($"drops: {what} netns", k.netns != 0, $"{k.netns}");
            Equal($"drops: {what} packets", s.packets, 1ul);
            Between($"drops: {what} bytes", s.bytes, minBytes, minBytes + 60);
            Equal($"drops: {what} ifindex (lo)", s.ifindex, 1u);
            Check($"drops: {what} location", s.location != 0, $"0x{s.location:x}");
        }
        // skb->len at the drop point counts from the transport header: TCP SYN with options, UDP header + payload.
        Expect("refused TCP SYN", "tcp", 6, 20);
        Expect("UDP to closed port", "udp", 17, (ulong)(8 + drop.Int("udp_len")));
        Equal("drops: insert failures", unit.Counters.GetValueOrDefault(("drop_counters", (int)DropCounter.InsertFailed)), 0ul);
    }

    // ---------- Processes: process.bpf.o ----------

    private void Process(UnitRun unit)
    {
        var exec = unit.Fire("exec");
        var exit = unit.Fire("exit");
        if (exec is null || exit is null)
        {
            Check("process: triggers ran", false, "no FIRE exec/exit line");
            return;
        }
        var execs = new List<ExecRecord>();
        var exits = new List<ExitRecord>();
        int undecoded = 0;
        foreach (byte[] data in unit.RecordsOf("events"))
        {
            switch (ProcessRecordDecoder.PeekKind(data))
            {
                case ProcessRecordKind.Exec when ProcessRecordDecoder.TryDecodeExec(data, out var e) == DecodeResult.Ok:
                    execs.Add(e);
                    break;
                case ProcessRecordKind.Exit when ProcessRecordDecoder.TryDecodeExit(data, out var x) == DecodeResult.Ok:
                    exits.Add(x);
                    break;
                default:
                    undecoded++;
                    break;
            }
        }
        Equal("process: every record decodes (ProcessRecordDecoder)", undecoded, 0);
        uint child = (uint)exec.Int("child"), quitter = (uint)exit.Int("child"), parent = (uint)_run.Pid;
        var e1 = execs.Where(e => e.Tgid == child).Select(e => (ExecRecord?)e).FirstOrDefault();
        if (Present("process: exec record", e1 is not null, $"exec of pid {child}"))
        {
            var e = e1!.Value;
            Equal("process: exec ppid = loader", e.Ppid, parent);
            Equal("process: exec exe", e.Exe, exec["path"]);
            Equal("process: exec args", string.Join(' ', e.Args), $"{exec["path"]} {exec["arg"]}");
            Equal("process: exec argc", e.Argc, 2u);
            Equal("process: exec comm", e.Comm, Path.GetFileName(exec["path"]));
            Equal("process: exec uid/euid", $"{e.Uid}/{e.Euid}", "0/0");
            Equal("process: exec args truncated", e.ArgsTruncated, false);
            Check("process: exec start <= timestamp", e.StartNs > 0 && e.StartNs <= e.TimestampNs, $"start {e.StartNs} ts {e.TimestampNs}");
            Check("process: exec cgroup id", e.CgroupId != 0, $"{e.CgroupId}");
        }
        var x1 = exits.Where(x => x.Tgid == child).Select(x => (ExitRecord?)x).FirstOrDefault();
        if (Present("process: exit record of the exec'd child", x1 is not null, $"exit of pid {child}"))
        {
            var x = x1!.Value;
            Equal("process: exit code (true)", x.ExitCode, 0);
            Equal("process: exit comm", x.Comm, Path.GetFileName(exec["path"]));
            Equal("process: exit ppid", x.Ppid, parent);
            Check("process: exit lifetime", x.LifetimeNs > 0 && x.LifetimeNs < 60_000_000_000, $"{x.LifetimeNs} ns");
        }
        var x2 = exits.Where(x => x.Tgid == quitter).Select(x => (ExitRecord?)x).FirstOrDefault();
        if (Present("process: exit record of _exit(7)", x2 is not null, $"exit of pid {quitter}"))
        {
            var x = x2!.Value;
            Equal("process: exit code (_exit(7))", x.ExitCode, exit.Int("code"));
            Equal("process: exit wait status", x.WaitStatus, exit.Int("status"));
            Equal("process: exit comm (no exec: the loader's)", x.Comm, _run.Comm);
            Equal("process: exit ppid", x.Ppid, parent);
        }
    }

    // ---------- Files: file.bpf.o ----------

    private void File(UnitRun unit)
    {
        var ops = unit.Fires.Where(f => f.Signal == "file" && f.Values.ContainsKey("op")).ToList();
        var watch = unit.Fire("watch");
        Equal("file: watched prefix registered", watch?["rc"], "0");
        var records = new List<FileRecord>();
        int undecoded = 0;
        foreach (byte[] data in unit.RecordsOf("events"))
        {
            if (FileRecordDecoder.TryDecode(data, out var r) == DecodeResult.Ok)
            {
                records.Add(r);
            }
            else
            {
                undecoded++;
            }
        }
        Equal("file: every record decodes (FileRecordDecoder)", undecoded, 0);
        // On the host other processes run too, and the kernel sends paths it cannot judge (relative,
        // or with "." and "..") to user space for normalization: only the loader's records count here.
        records = records.Where(r => r.Tgid == (uint)_run.Pid).ToList();
        Equal("file: one record per watched call", records.Count, ops.Count);
        var unmatched = new List<FileRecord>(records);
        foreach (var op in ops)
        {
            string sys = op["syscall"];
            string name = $"file: {op["op"]} via {sys}";
            uint nr = SyscallNumbers[sys];
            var expectedOp = op["op"] switch
            {
                "create" => FileOp.Create,
                "open" => FileOp.Open,
                "write" => FileOp.Write,
                "rename" => FileOp.Rename,
                "unlink" => FileOp.Unlink,
                _ => (FileOp)0,
            };
            int index = unmatched.FindIndex(r => r.SyscallNr == nr && r.Path == op["path"] && r.Op == expectedOp);
            if (!Present(name, index >= 0, $"{op["op"]} record of {sys} on {op["path"]}"))
            {
                continue;
            }
            var r = unmatched[index];
            unmatched.RemoveAt(index);
            var expectedStatus = sys == "openat-relative" ? FileStatus.PathResolved : FileStatus.None;
            bool ok = r.Op == expectedOp
                && r.Result == long.Parse(op["result"], CultureInfo.InvariantCulture)
                && r.Tgid == (uint)_run.Pid && r.Pid == (uint)_run.Pid && r.Comm == _run.Comm && r.Euid == 0
                && r.NewPath == (op.Values.TryGetValue("new_path", out var np) ? np : "")
                && r.Status == expectedStatus
                && r.CgroupId != 0;
            Check(name, ok,
                $"op={FileRecordDecoder.OpName(r.Op)} result={r.Result} tgid={r.Tgid} comm={r.Comm} status={r.Status} new_path={r.NewPath}" +
                (ok ? "" : $" (expected op={op["op"]} result={op["result"]} tgid={_run.Pid} status={expectedStatus})"));
            if (sys == "openat" && op["op"] == "create")
            {
                Equal("file: create flags (O_CREAT|O_WRONLY|O_TRUNC)", r.Flags, 0x241ul);
                Equal("file: create mode", r.Mode, 0x180u);
            }
            if (sys == "creat")
            {
                Equal("file: creat mode", r.Mode, 0x1a0u);
            }
        }
        Equal("file: results known (no ResultUnknown counter)", unit.Counters.GetValueOrDefault(("counters", (int)FileKernelCounter.ResultUnknown)), 0ul);
    }
}
