using Fathom.Cpu;

namespace Fathom.Tests.Runtime;

/// <summary>
/// The pool's hand-off between jobs: helpers that spin, block, wake late or join whichever job is open must still
/// run every piece of every job exactly once, and never a piece of one job with another job's work.
/// </summary>
public sealed class WorkerPoolTests
{
    /// <summary>Counts how often each piece ran; pieces are slow or instant at random so hand-offs interleave.</summary>
    private sealed class CountingWork(int maxPieces, int job) : IParallelWork
    {
        public readonly int[] Runs = new int[maxPieces];
        public int Job { get; } = job;

        public void Execute(int index, int worker)
        {
            Interlocked.Increment(ref Runs[index]);
            if ((index + Job) % 5 == 0) Thread.SpinWait(200);
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void ManyShortJobsRunEveryPieceExactlyOnce(int threads)
    {
        using var pool = new WorkerPool(threads);
        for (int job = 0; job < 3000; job++)
        {
            int pieces = 1 + job % 9;
            var work = new CountingWork(pieces, job);
            pool.Run(work, pieces);
            for (int p = 0; p < pieces; p++)
                Assert.True(work.Runs[p] == 1, $"job {job} piece {p} ran {work.Runs[p]} times");
            // Every so often let the helpers give up spinning and block, so the wake-up path runs too.
            if (job % 500 == 499) Thread.Sleep(5);
        }
    }

    [Fact]
    public void JobsAfterAnIdlePauseStillUseTheHelpers()
    {
        using var pool = new WorkerPool(2);
        Thread.Sleep(20); // far past the spin time: the helper is blocked
        var workers = new int[2];
        var work = new RecordingWork(workers);
        pool.Run(work, 64);
        Assert.Equal(64, workers[0] + workers[1]);
        Assert.True(workers[1] > 0, "the blocked helper was not woken for a 64-piece job");
    }

    /// <summary>Counts pieces per worker; each piece waits a little so a woken helper has time to claim some.</summary>
    private sealed class RecordingWork(int[] workers) : IParallelWork
    {
        public void Execute(int index, int worker)
        {
            Interlocked.Increment(ref workers[worker]);
            Thread.Sleep(1);
        }
    }
}
