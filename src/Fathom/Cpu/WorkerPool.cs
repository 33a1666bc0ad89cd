using System.Runtime.ExceptionServices;

namespace Fathom.Cpu;

/// <summary>
/// A fixed set of background threads that, together with the calling thread, run the pieces of one
/// <see cref="IParallelWork"/> at a time. Pieces are claimed with an atomic counter, so uneven pieces balance
/// themselves. Running a job allocates nothing (unlike <c>Parallel.For</c>), which keeps decoding garbage-free.
/// </summary>
internal sealed class WorkerPool : IDisposable
{
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim _start = new(0);
    private readonly CountdownEvent _done = new(1);
    private readonly Lock _runLock = new();
    private IParallelWork? _work;
    private int _pieces;
    private int _next;
    private Exception? _failure;
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
        // The first wait that blocks makes the event allocate its lock object (24 B); a timed-out wait here makes
        // that happen now, not during some later decode step.
        _done.Wait(1);
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
            int helpers = Math.Min(_threads.Length, pieces - 1);
            _work = work;
            _pieces = pieces;
            _next = 0;
            _failure = null;
            _done.Reset(helpers);
            _start.Release(helpers);
            Drain(0);
            _done.Wait();
            _work = null;
            if (_failure is { } failure) ExceptionDispatchInfo.Throw(failure);
        }
    }

    private void WorkerLoop(int worker)
    {
        while (true)
        {
            _start.Wait();
            if (_disposed) return;
            Drain(worker);
            _done.Signal();
        }
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
        if (_threads.Length > 0) _start.Release(_threads.Length);
        foreach (Thread t in _threads) t.Join();
        _start.Dispose();
        _done.Dispose();
    }
}
