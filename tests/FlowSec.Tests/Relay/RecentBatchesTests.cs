using FlowSec.Relay.Ingest;
using FlowSec.Tests.Storage;

namespace FlowSec.Tests.Relay;

/// <summary>
/// The relay's memory of recent batch ids: a copy of a batch it holds is acked with the first, but a
/// copy of one it withdrew (the first stream ended before the writer took it) must be stored.
/// </summary>
public sealed class RecentBatchesTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task A_batch_sent_again_after_its_first_copy_was_withdrawn_is_published_again()
    {
        var recent = new RecentBatches();
        var first = new TaskCompletionSource();
        (await recent.AcceptAsync("n", 7, 10, () => ValueTask.FromResult(first.Task))).Duplicate.Should().BeFalse();
        first.SetCanceled(); // withdrawn

        var second = new TaskCompletionSource();
        var (stored, duplicate) = await recent.AcceptAsync("n", 7, 10, () => ValueTask.FromResult(second.Task));
        duplicate.Should().BeFalse("the first copy will never be stored");
        stored.Should().BeSameAs(second.Task);
        recent.Duplicates.Should().Be(0);
    }

    [Fact]
    public async Task A_copy_waiting_for_a_first_copy_that_is_then_withdrawn_is_published_and_acked()
    {
        var recent = new RecentBatches();
        var first = new TaskCompletionSource();
        await recent.AcceptAsync("n", 7, 10, () => ValueTask.FromResult(first.Task));

        var second = new TaskCompletionSource();
        var published = 0;
        var (stored, duplicate) = await recent.AcceptAsync("n", 7, 10, () =>
        {
            published++;
            return ValueTask.FromResult(second.Task);
        });
        duplicate.Should().BeTrue("the first copy is still queued");
        first.SetCanceled(); // its stream ended before the writer took it
        await Eventually.HoldsAsync(() => published == 1, Timeout, () => "the second copy published");
        stored.IsCompleted.Should().BeFalse("acked once the second copy is stored");
        second.SetResult();
        await stored.WaitAsync(Timeout);
        recent.Duplicates.Should().Be(0, "nothing was skipped");
    }

    [Fact]
    public async Task A_copy_of_a_batch_being_stored_is_acked_with_it_and_counted_as_a_duplicate()
    {
        var recent = new RecentBatches();
        var first = new TaskCompletionSource();
        await recent.AcceptAsync("n", 7, 10, () => ValueTask.FromResult(first.Task));
        var (stored, duplicate) = await recent.AcceptAsync("n", 7, 10, () => throw new InvalidOperationException("not published twice"));
        duplicate.Should().BeTrue();
        first.SetResult();
        await stored.WaitAsync(Timeout);
        recent.Duplicates.Should().Be(1);
        recent.DuplicateEvents.Should().Be(10);
    }
}
