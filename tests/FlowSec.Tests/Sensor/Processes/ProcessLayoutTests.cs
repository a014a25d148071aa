using FlowSec.Sensor.Capture;

namespace FlowSec.Tests.Sensor.Processes;

/// <summary>The process records' C# mirrors against the BTF of the embedded process object and flowsec.h.</summary>
public class ProcessLayoutTests
{
    [Fact]
    public void Exec_and_exit_records_match_the_btf_of_the_embedded_object()
    {
        string btf = KernelLayoutTests.DumpEmbeddedObjectBtf(ProcessCapture.ObjectName);

        BtfLayout.AssertMatches<FsExecRecord>(btf, "fs_exec_record", 1352);
        BtfLayout.AssertNoImplicitPadding<FsExecRecord>("fs_exec_record");
        BtfLayout.AssertMatches<FsExitRecord>(btf, "fs_exit_record", 64);
        BtfLayout.AssertNoImplicitPadding<FsExitRecord>("fs_exit_record");
        ProcessRecordDecoder.ExecRecordSize.Should().Be(1352);
        ProcessRecordDecoder.ExitRecordSize.Should().Be(64);
    }

    [Fact]
    public void Record_kinds_counters_and_bounds_match_flowsec_h()
    {
        BtfLayout.HeaderValue("FS_RECORD_EXEC").Should().Be((long)ProcessRecordKind.Exec);
        BtfLayout.HeaderValue("FS_RECORD_EXIT").Should().Be((long)ProcessRecordKind.Exit);
        BtfLayout.HeaderValue("FS_PROCESS_COUNTER_RINGBUF_RESERVE_FAILED").Should().Be((long)ProcessKernelCounter.RingBufferReserveFailed);
        BtfLayout.HeaderValue("FS_PROCESS_COUNTER_ARGS_UNREADABLE").Should().Be((long)ProcessKernelCounter.ArgsUnreadable);
        BtfLayout.HeaderValue("FS_EXE_LEN", define: true).Should().Be(FsExecRecord.ExeLength);
        BtfLayout.HeaderValue("FS_ARGS_LEN", define: true).Should().Be(FsExecRecord.ArgsLength);
        BtfLayout.HeaderValue("FS_COMM_LEN", define: true).Should().Be(FsExecRecord.CommLength).And.Be(FsExitRecord.CommLength);
    }
}
