using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace Fathom.Cpu;

/// <summary>
/// A fixed set of background threads that, together with the calling thread, run the pieces of one
/// <see cref="IParallelWork"/> at a time. Pieces are claimed with an atomic counter, so uneven pieces balance
/// themselves. Running a job allocates nothing (unlike <c>Parallel.For</c>), which keeps decoding garbage-free.
/// <para>
/// A decode step is a few hundred jobs of tens of microseconds, and waking a blocked thread costs about as much as
/// one job, so a helper spins for a short while after each job, watching for the next, before it blocks. The
/// caller never waits for a helper that has not started: it runs every piece nobody claimed, closes the job, and
/// then waits only for helpers still inside it (each at most one piece from done). A helper that wakes late finds
/// the job closed, or joins whichever job is open then. On a loaded machine a descheduled helper therefore costs
/// the caller nothing but the pieces it does itself.
/// </para>
/// </summary>
internal sealed class WorkerPool : IDisposable
{
    // How long a helper spins for the next job before it blocks: longer than the gap between two jobs of a decode
    // step (a norm, the routing), short enough that an idle pool stops using the CPU almost at once.
    private static readonly long SpinTicks = Stopwatch.Frequency / 10_000; // 100 µs

    private readonly Thread[] _threads;
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Lock _runLock = new();
    private IParallelWork? _work;
    private int _pieces;
    private int _next;
    private Exception? _failure;
    // Bumped when a job opens; helpers compare it with the last one they saw.
    private long _generation;
    // 1 while the current job accepts helpers; helpers inside it are counted in _active (see Join and Run).
    private int _open;
    private int _active;
    // Helpers that are about to block or blocked on _wake.
    private int _sleepers;
    private volatile bool _disposed;

    public WorkerPool(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threads);
        Threads = threads;
        _threads = new Thread[threads - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            int worker = i + 1;
            _threads[i] = new Thread(() => WorkerLoop(worker)) { IsBackground = true, Name = $"Fathom CPU worker {worker}" };
            _threads[i].Start();
        }
    }

    /// <summary>Threads including the caller's.</summary>
    public int Threads { get; }

    /// <summary>Runs pieces 0..pieces-1 of <paramref name="work"/> and returns when all are done.</summary>
    public void Run(IParallelWork work, int pieces)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (pieces <= 0) return;
        if (_threads.Length == 0 || pieces == 1)
        {
            for (int i = 0; i < pieces; i++) work.Execute(i, 0);
            return;
        }
        lock (_runLock)
        {
            _work = work;
            _pieces = pieces;
            _next = 0;
            _failure = null;
            Volatile.Write(ref _open, 1);
            // A full fence: the job's fields are visible before the new generation, and _sleepers is read after it
            // (a helper registers as a sleeper before re-reading the generation, so one of the two sees the other).
            Interlocked.Increment(ref _generation);
            int sleepers = Volatile.Read(ref _sleepers);
            if (sleepers > 0) _wake.Release(Math.Min(sleepers, pieces - 1));

            Drain(0);
            // Closing is a full fence too: a helper increments _active before it reads _open, so either it sees the
            // job closed and leaves, or this thread sees it active and waits for it.
            Interlocked.Exchange(ref _open, 0);
            var spin = new SpinWait();
            while (Volatile.Read(ref _active) != 0) spin.SpinOnce(sleep1Threshold: -1);
            _work = null;
            if (_failure is { } failure) ExceptionDispatchInfo.Throw(failure);
        }
    }

    private void WorkerLoop(int worker)
    {
        long seen = 0;
        while (!_disposed)
        {
            if (!WaitForJob(seen)) continue;
            seen = Volatile.Read(ref _generation);
            Join(worker);
        }
    }

    /// <summary>Spins, then blocks, until a job newer than <paramref name="seen"/> opens; false on a spurious wake-up.</summary>
    private bool WaitForJob(long seen)
    {
        long deadline = Stopwatch.GetTimestamp() + SpinTicks;
        // SpinWait pauses first, then yields: on a quiet machine the next job is seen within a microsecond, on a
        // loaded one the core goes to whoever needs it (the caller among them) instead of to this loop.
        var spin = new SpinWait();
        while (Volatile.Read(ref _generation) == seen)
        {
            if (Stopwatch.GetTimestamp() > deadline)
            {
                Interlocked.Increment(ref _sleepers);
                if (Volatile.Read(ref _generation) == seen && !_disposed) _wake.Wait();
                Interlocked.Decrement(ref _sleepers);
                return Volatile.Read(ref _generation) != seen;
            }
            spin.SpinOnce(sleep1Threshold: -1);
        }
        return true;
    }

    /// <summary>Works on the open job, if there is one; while counted in <see cref="_active"/> its fields cannot change.</summary>
    private void Join(int worker)
    {
        Interlocked.Increment(ref _active);
        if (Volatile.Read(ref _open) == 1) Drain(worker);
        Interlocked.Decrement(ref _active);
    }

    private void Drain(int worker)
    {
        IParallelWork work = _work!;
        try
        {
            int piece;
            while ((piece = Interlocked.Increment(ref _next) - 1) < _pieces) work.Execute(piece, worker);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _failure, e, null);
            Volatile.Write(ref _next, int.MaxValue / 2); // stop handing out pieces
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Interlocked.Increment(ref _generation);
        if (_threads.Length > 0) _wake.Release(_threads.Length);
        foreach (Thread t in _threads) t.Join();
        _wake.Dispose();
    }
}
