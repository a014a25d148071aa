using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor.Files;

/// <summary>The file records' C# mirrors against the BTF of the embedded file object and flowsec.h.</summary>
public class FileLayoutTests
{
    [Fact]
    public void File_record_and_path_key_match_the_btf_of_the_embedded_object()
    {
        string btf = KernelLayoutTests.DumpEmbeddedObjectBtf(FileCapture.ObjectName);

        BtfLayout.AssertMatches<FsFileRecord>(btf, "fs_file_record", 592);
        BtfLayout.AssertNoImplicitPadding<FsFileRecord>("fs_file_record");
        BtfLayout.AssertMatches<FsPathKey>(btf, "fs_path_key", 260);
        BtfLayout.AssertNoImplicitPadding<FsPathKey>("fs_path_key");
        FileRecordDecoder.RecordSize.Should().Be(592);
    }

    [Fact]
    public void Kinds_ops_status_bits_counters_and_bounds_match_flowsec_h()
    {
        BtfLayout.HeaderValue("FS_RECORD_FILE").Should().Be((long)FileRecordKind.File);
        foreach (var (name, op) in new[] { ("OPEN", FileOp.Open), ("CREATE", FileOp.Create), ("WRITE", FileOp.Write), ("UNLINK", FileOp.Unlink), ("RENAME", FileOp.Rename) })
        {
            BtfLayout.HeaderValue($"FS_FILE_OP_{name}").Should().Be((long)op, name);
        }
        foreach (var (name, bit) in new[]
        {
            ("RESULT_UNKNOWN", FileStatus.ResultUnknown), ("PATH_TRUNCATED", FileStatus.PathTruncated),
            ("NEW_PATH_TRUNCATED", FileStatus.NewPathTruncated), ("UNNORMALIZED", FileStatus.Unnormalized),
            ("PATH_RESOLVED", FileStatus.PathResolved), ("NEW_PATH_RESOLVED", FileStatus.NewPathResolved),
            ("READ_LATE", FileStatus.ReadLate),
        })
        {
            BtfLayout.HeaderValue($"FS_FILE_{name}").Should().Be((long)bit, name);
        }
        foreach (var (name, counter) in new[]
        {
            ("RINGBUF_RESERVE_FAILED", FileKernelCounter.RingBufferReserveFailed), ("PENDING_FULL", FileKernelCounter.PendingFull),
            ("PENDING_REPLACED", FileKernelCounter.PendingReplaced), ("RESULT_UNKNOWN", FileKernelCounter.ResultUnknown),
            ("RELATIVE_UNRESOLVED", FileKernelCounter.RelativeUnresolved), ("PATH_UNREADABLE", FileKernelCounter.PathUnreadable),
        })
        {
            BtfLayout.HeaderValue($"FS_FILE_COUNTER_{name}").Should().Be((long)counter, name);
        }
        BtfLayout.HeaderValue("FS_FILE_WATCH_IGNORE").Should().Be((long)FileWatch.Ignore);
        BtfLayout.HeaderValue("FS_FILE_WATCH_READS").Should().Be((long)FileWatch.Reads);
        BtfLayout.HeaderValue("FS_FILE_WATCH_CHANGES").Should().Be((long)FileWatch.Changes);
        BtfLayout.HeaderValue("FS_FILE_WATCH_REPORT").Should().Be((long)(FileWatch.Reads | FileWatch.Changes));
        BtfLayout.HeaderValue("FS_PATH_LEN", define: true).Should().Be(FsFileRecord.PathLength).And.Be(FsPathKey.PathLength);
    }
}
