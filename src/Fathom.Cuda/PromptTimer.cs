using System.Diagnostics;
using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// FATHOM_CUDA_STEP_TIMES=1, for passes of more than one token (prompts): whether the GPU or the host sets a pass's
/// pace. Per pass, the host's time from BeginForward to EndForward split into busy (walking the model code, queueing
/// launches) and waiting (inside <see cref="CudaContext.Synchronize"/>), and the GPU's time between two events at the
/// same two points. A GPU time close to the host's busy time means the GPU waited for launches: kernels faster than the
/// host queues them. Written to standard error when the backend is disposed, next to <see cref="StepTimer"/>'s line.
/// </summary>
internal sealed class PromptTimer(CudaContext context) : IDisposable
{
    private IntPtr _start, _end;
    private bool _open, _pending;
    private long _passStart, _waitStart, _passes, _tokens;
    private double _busyMs, _waitMs, _gpuMs;

    public static PromptTimer? FromEnvironment(CudaContext context) =>
        Environment.GetEnvironmentVariable("FATHOM_CUDA_STEP_TIMES") == "1" ? new PromptTimer(context) : null;

    /// <summary>A forward pass of <paramref name="tokens"/> starts (after BeginForward's own synchronization).</summary>
    public void BeginForward(int tokens)
    {
        Collect();
        if (tokens <= 1) return;
        if (_start == IntPtr.Zero) (_start, _end) = (context.Driver.CreateEvent(), context.Driver.CreateEvent());
        context.Driver.RecordEvent(_start, context.Stream);
        (_open, _passStart, _waitStart) = (true, Stopwatch.GetTimestamp(), context.SynchronizeTicks);
        _passes++;
        _tokens += tokens;
    }

    /// <summary>The pass's work is queued.</summary>
    public void EndForward()
    {
        if (!_open) return;
        _open = false;
        long waited = context.SynchronizeTicks - _waitStart;
        double wallMs = Stopwatch.GetElapsedTime(_passStart).TotalMilliseconds, waitMs = waited * 1000.0 / Stopwatch.Frequency;
        _busyMs += wallMs - waitMs;
        _waitMs += waitMs;
        context.Driver.RecordEvent(_end, context.Stream);
        _pending = true;
    }

    /// <summary>Adds the last pass's GPU time once its end event has completed.</summary>
    private void Collect()
    {
        if (!_pending) return;
        _pending = false;
        context.Driver.SynchronizeEvent(_end);
        _gpuMs += context.Driver.ElapsedMilliseconds(_start, _end);
    }

    public void Dispose()
    {
        if (_start == IntPtr.Zero) return;
        Collect();
        context.Driver.DestroyEvent(_start);
        context.Driver.DestroyEvent(_end);
        if (_passes == 0) return;
        Console.Error.WriteLine(
            $"prompt passes: {_passes} ({(double)_tokens / _passes:F0} tokens each); host busy {_busyMs / _passes:F2} ms, host waiting " +
            $"{_waitMs / _passes:F2} ms, GPU {_gpuMs / _passes:F2} ms (mean per pass, BeginForward to EndForward)");
    }
}
