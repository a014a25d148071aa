using FlowSec.Api.V1;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Processes;

namespace FlowSec.Tests.Sensor.Files;

public class FileRecordDecoderTests
{
    [Fact]
    public void File_record_decodes_every_field()
    {
        var bytes = new FileRecordBytes
        {
            Op = 5,
            Result = 0,
            Flags = 1,
            SyscallNr = 316,
            Status = 16 | 64,
            Path = "/etc/a",
            NewPath = "/etc/b",
            Mode = 0x1A4 /* 0644 */,
        }.ToBytes();

        FileRecordDecoder.TryDecode(bytes, out var r).Should().Be(DecodeResult.Ok);

        r.Should().Be(new FileRecord(5150, 5151, 1000, 7_000_000_000, 99, 0, 1, 0x1A4 /* 0644 */, 316, FileOp.Rename,
            FileStatus.PathResolved | FileStatus.ReadLate, "cat", "/etc/a", "/etc/b"));
    }

    [Fact]
    public void Negative_results_paths_of_full_length_and_bad_samples()
    {
        string longPath = "/" + new string('p', 254);
        FileRecordDecoder.TryDecode(new FileRecordBytes { Result = -13, Path = longPath }.ToBytes(), out var r).Should().Be(DecodeResult.Ok);
        r.Result.Should().Be(-13);
        r.Path.Should().Be(longPath, "255 bytes and the NUL fill the field");

        FileRecordDecoder.TryDecode(new byte[591], out _).Should().Be(DecodeResult.TooShort);
        FileRecordDecoder.TryDecode(new FileRecordBytes { Kind = 48 }.ToBytes(), out _).Should().Be(DecodeResult.UnknownKind);
        FileRecordDecoder.TryDecode(new FileRecordBytes { Op = 9 }.ToBytes(), out _).Should().Be(DecodeResult.UnknownKind);
        FileRecordDecoder.TryDecode(new FileRecordBytes { Op = 0 }.ToBytes(), out _).Should().Be(DecodeResult.UnknownKind);
    }

    [Theory]
    [InlineData(1, "open")]
    [InlineData(2, "create")]
    [InlineData(3, "write")]
    [InlineData(4, "unlink")]
    [InlineData(5, "rename")]
    public void Ops_have_the_event_model_names(ushort op, string name)
    {
        FileRecordDecoder.TryDecode(new FileRecordBytes { Op = op }.ToBytes(), out var r);

        FileRecordDecoder.OpName(r.Op).Should().Be(name);
    }

    [Fact]
    public void File_event_carries_activity_source_and_known_process()
    {
        FileRecordDecoder.TryDecode(new FileRecordBytes { Result = 4 }.ToBytes(), out var r);
        var actor = new ProcessEntry(5150, 42, 1000, "cat", "/usr/bin/cat", ["cat", "/etc/shadow"], 1);
        var parent = new ProcessEntry(42, 1, 1000, "bash", "/usr/bin/bash", ["bash"], 1);

        Event e = FileCapture.FileEvent(r, r.Path, "", actor, parent, "node-b", 500);

        e.Type.Should().Be(EventType.File);
        e.Capture.Should().Be("bpf");
        e.Node.Should().Be("node-b");
        e.TimeUnixNano.Should().Be(7_000_000_500);
        e.Source.Should().BeEquivalentTo(new Endpoint { Pid = 5150, Process = "cat", CgroupId = 99 });
        e.File.Should().BeEquivalentTo(new FileActivity { Path = "/etc/shadow", Op = "open", Flags = 0x80000, Result = 4, NewPath = "" });
        e.Process.Pid.Should().Be(5150);
        e.Process.Uid.Should().Be(1000);
        e.Process.Ppid.Should().Be(42);
        e.Process.Exe.Should().Be("/usr/bin/cat");
        e.Process.ParentExe.Should().Be("/usr/bin/bash");
    }

    [Fact]
    public void A_record_without_result_says_so_instead_of_claiming_success()
    {
        FileRecordDecoder.TryDecode(new FileRecordBytes { Op = 4, Result = 0, Status = 1 }.ToBytes(), out var r);

        Event e = FileCapture.FileEvent(r, r.Path, "", null, null, "n", 0);

        e.File.Result.Should().Be(FileCapture.ResultUnknown);
        e.Process.Exe.Should().BeEmpty();
    }
}
