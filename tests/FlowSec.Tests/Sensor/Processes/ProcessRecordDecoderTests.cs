using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Processes;

namespace FlowSec.Tests.Sensor.Processes;

public class ProcessRecordDecoderTests
{
    [Fact]
    public void Exec_record_decodes_every_field()
    {
        byte[] bytes = ProcessRecordBytes.Exec(args: ["sudo", "-u", "ünïcode", ""]);

        ProcessRecordDecoder.PeekKind(bytes).Should().Be(ProcessRecordKind.Exec);
        ProcessRecordDecoder.TryDecodeExec(bytes, out var r).Should().Be(DecodeResult.Ok);

        r.Tgid.Should().Be(4242);
        r.Ppid.Should().Be(1);
        r.Uid.Should().Be(1000);
        r.Euid.Should().Be(0);
        r.Argc.Should().Be(4);
        r.TimestampNs.Should().Be(9_000_000_000);
        r.StartNs.Should().Be(8_000_000_000);
        r.CgroupId.Should().Be(77);
        r.Comm.Should().Be("sudo");
        r.Exe.Should().Be("/usr/bin/sudo");
        r.Args.Should().Equal(new List<string> { "sudo", "-u", "ünïcode", "" }, "an empty argument is an argument");
        r.ArgsTruncated.Should().BeFalse();
    }

    [Fact]
    public void More_than_sixteen_arguments_are_cut_and_flagged()
    {
        string[] args = Enumerable.Range(0, 20).Select(i => $"a{i}").ToArray();

        ProcessRecordDecoder.TryDecodeExec(ProcessRecordBytes.Exec(args: args), out var r).Should().Be(DecodeResult.Ok);

        r.Args.Should().Equal(args.Take(16));
        r.ArgsTruncated.Should().BeTrue();
    }

    [Fact]
    public void An_argument_area_longer_than_the_copy_is_flagged_and_its_cut_argument_kept()
    {
        // What the kernel sends for a 2 KiB argument list: 1024 bytes copied, the last argument cut mid-way.
        string[] args = ["cat", new string('x', 1500), "tail"];

        ProcessRecordDecoder.TryDecodeExec(ProcessRecordBytes.Exec(args: args, argsSize: 1510), out var r).Should().Be(DecodeResult.Ok);

        r.Args.Should().HaveCount(2);
        r.Args[0].Should().Be("cat");
        r.Args[1].Should().Be(new string('x', 1020));
        r.ArgsTruncated.Should().BeTrue();
    }

    [Fact]
    public void Argc_above_the_arguments_read_is_flagged()
    {
        ProcessRecordDecoder.TryDecodeExec(ProcessRecordBytes.Exec(argc: 5, args: ["a", "b"]), out var r).Should().Be(DecodeResult.Ok);

        r.ArgsTruncated.Should().BeTrue();
    }

    [Fact]
    public void Corrupt_lengths_and_short_or_foreign_samples_do_not_throw()
    {
        ProcessRecordDecoder.TryDecodeExec(ProcessRecordBytes.Exec(argsLen: 60_000), out var r).Should().Be(DecodeResult.Ok);
        r.Args.Should().StartWith("sudo");
        ProcessRecordDecoder.TryDecodeExec(new byte[1351], out _).Should().Be(DecodeResult.TooShort);
        ProcessRecordDecoder.TryDecodeExec(ProcessRecordBytes.Exec(kind: 49), out _).Should().Be(DecodeResult.UnknownKind);
        ProcessRecordDecoder.TryDecodeExit(new byte[63], out _).Should().Be(DecodeResult.TooShort);
        ProcessRecordDecoder.TryDecodeExit(ProcessRecordBytes.Exit(kind: 48), out _).Should().Be(DecodeResult.UnknownKind);
        ProcessRecordDecoder.PeekKind(new byte[3]).Should().BeNull();
    }

    [Theory]
    [InlineData(0x0000, 0, false)]   // exit(0)
    [InlineData(0x0300, 3, false)]   // exit(3)
    [InlineData(0xff00, 255, false)] // exit(-1)
    [InlineData(0x0009, -9, false)]  // SIGKILL
    [InlineData(0x0086, -6, true)]   // SIGABRT, core dumped
    public void Exit_status_becomes_exit_code_or_minus_signal(int waitStatus, int exitCode, bool core)
    {
        ProcessRecordDecoder.TryDecodeExit(ProcessRecordBytes.Exit(exitCode: waitStatus), out var r).Should().Be(DecodeResult.Ok);

        r.ExitCode.Should().Be(exitCode);
        r.CoreDumped.Should().Be(core);
        r.LifetimeNs.Should().Be(1_500_000_000);
        r.Comm.Should().Be("sudo");
        r.CgroupId.Should().Be(77);
    }

    [Fact]
    public void Exec_event_carries_process_parent_exe_and_source_endpoint()
    {
        ProcessRecordDecoder.TryDecodeExec(ProcessRecordBytes.Exec(), out var r);
        var parent = new ProcessEntry(1, 0, 0, "systemd", "/usr/lib/systemd/systemd", ["/sbin/init"], 1);

        Event e = ProcessCapture.ExecEvent(r, "/usr/bin/sudo", parent, "node-a", 1_000);

        e.Type.Should().Be(EventType.Exec);
        e.Capture.Should().Be("bpf");
        e.Node.Should().Be("node-a");
        e.TimeUnixNano.Should().Be(9_000_001_000);
        e.Source.Should().BeEquivalentTo(new Endpoint { Pid = 4242, Process = "sudo", CgroupId = 77 });
        e.Process.Pid.Should().Be(4242);
        e.Process.Ppid.Should().Be(1);
        e.Process.Uid.Should().Be(0, "the effective uid: sudo runs as root");
        e.Process.Exe.Should().Be("/usr/bin/sudo");
        e.Process.Args.Should().Equal("sudo", "-i");
        e.Process.ParentExe.Should().Be("/usr/lib/systemd/systemd");
    }

    [Fact]
    public void Exit_event_takes_exe_and_args_from_the_table_and_lifetime_from_the_record()
    {
        ProcessRecordDecoder.TryDecodeExit(ProcessRecordBytes.Exit(exitCode: 0x0100), out var r);
        var entry = new ProcessEntry(4242, 1, 0, "sudo", "/usr/bin/sudo", ["sudo", "-i"], 8_000_000_000);

        Event known = ProcessCapture.ExitEvent(r, entry, null, "node-a", 0);
        Event unknown = ProcessCapture.ExitEvent(r, null, null, "node-a", 0);

        known.Type.Should().Be(EventType.Exit);
        known.Process.ExitCode.Should().Be(1);
        known.Process.LifetimeNs.Should().Be(1_500_000_000);
        known.Process.Exe.Should().Be("/usr/bin/sudo");
        known.Process.Args.Should().Equal("sudo", "-i");
        known.Source.Process.Should().Be("sudo");
        unknown.Process.Exe.Should().BeEmpty();
        unknown.Process.LifetimeNs.Should().Be(1_500_000_000, "the kernel record carries the start time");
    }
}
