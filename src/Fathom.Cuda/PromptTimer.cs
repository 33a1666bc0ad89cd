using System.Diagnostics;
using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// FATHOM_CUDA_STEP_TIMES=1, for passes of more than one token (prompts): whether the GPU or the host sets a pass's
/// pace. Per pass, the host's time from BeginForward to EndForward split into busy (walking the model code, queueing
/// launches) and waiting (inside <see cref="CudaContext.Synchronize"/>), and the GPU's time between two events at the
/// same two points. A GPU time close to the host's busy time means the GPU waited for launches: kernels faster than the
/// host queues them. Written to standard error when the backend is disposed, next to <see cref="StepTimer"/>'s line:
/// the last <see cref="KeptPasses"/> passes one by one (a benchmark's first pass also uploads the weights).
/// </summary>
internal sealed class PromptTimer(CudaContext context) : IDisposable
{
    private IntPtr _start, _end;
    private bool _open, _pending;
    private const int KeptPasses = 8;
    private readonly Queue<(int Tokens, double BusyMs, double WaitMs, double GpuMs)> _kept = new();
    private long _passStart, _waitStart;
    private int _tokens;
    private double _busyMs, _waitMs;

    public static PromptTimer? FromEnvironment(CudaContext context) =>
        Environment.GetEnvironmentVariable("FATHOM_CUDA_STEP_TIMES") == "1" ? new PromptTimer(context) : null;

    /// <summary>A forward pass of <paramref name="tokens"/> starts (after BeginForward's own synchronization).</summary>
    public void BeginForward(int tokens)
    {
        Collect();
        if (tokens <= 1) return;
        if (_start == IntPtr.Zero) (_start, _end) = (context.Driver.CreateEvent(), context.Driver.CreateEvent());
        context.Driver.RecordEvent(_start, context.Stream);
        (_open, _passStart, _waitStart, _tokens) = (true, Stopwatch.GetTimestamp(), context.SynchronizeTicks, tokens);
    }

    /// <summary>The pass's work is queued.</summary>
    public void EndForward()
    {
        if (!_open) return;
        _open = false;
        long waited = context.SynchronizeTicks - _waitStart;
        double wallMs = Stopwatch.GetElapsedTime(_passStart).TotalMilliseconds, waitMs = waited * 1000.0 / Stopwatch.Frequency;
        (_busyMs, _waitMs) = (wallMs - waitMs, waitMs);
        context.Driver.RecordEvent(_end, context.Stream);
        _pending = true;
    }

    /// <summary>Adds the last pass's GPU time once its end event has completed.</summary>
    private void Collect()
    {
        if (!_pending) return;
        _pending = false;
        context.Driver.SynchronizeEvent(_end);
        if (_kept.Count == KeptPasses) _kept.Dequeue();
        _kept.Enqueue((_tokens, _busyMs, _waitMs, context.Driver.ElapsedMilliseconds(_start, _end)));
    }

    public void Dispose()
    {
        if (_start == IntPtr.Zero) return;
        Collect();
        context.Driver.DestroyEvent(_start);
        context.Driver.DestroyEvent(_end);
        foreach ((int tokens, double busyMs, double waitMs, double gpuMs) in _kept)
            Console.Error.WriteLine($"prompt pass of {tokens} tokens: host busy {busyMs:F2} ms, host waiting {waitMs:F2} ms, GPU {gpuMs:F2} ms (BeginForward to EndForward)");
    }
}
