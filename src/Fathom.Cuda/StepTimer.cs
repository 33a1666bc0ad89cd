using System.Diagnostics;
using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// Diagnostics for replayed decode steps. FATHOM_CUDA_STEP_TIMES=1: where a step's time goes — the host's walk through
/// the model code (checking the step against its recording; near zero for a verified step, which skips it), the
/// replayed graph's GPU time (two events around the launch), and the whole period from one step's start to the next
/// when no other pass ran in between — written to standard error when the backend is
/// disposed. FATHOM_CUDA_PROFILE_REPLAY=N: a profiler range (cuProfilerStart/Stop) around the N-th replay only, so
/// <c>ncu --profile-from-start off --graph-profiling node</c> measures the kernels of exactly one decode step.
/// </summary>
internal sealed class StepTimer(CudaContext context, bool times, long profiledReplay) : IDisposable
{
    private IntPtr _start, _end;
    private long _stepStart, _previousStepStart, _replays;
    private bool _pending;
    private int _unwalked;
    private double _walkMs, _gpuMs, _periodMs;
    private int _periods;
    private long _selectionsInGraph;

    public static StepTimer? FromEnvironment(CudaContext context)
    {
        bool times = Environment.GetEnvironmentVariable("FATHOM_CUDA_STEP_TIMES") == "1";
        long replay = long.TryParse(Environment.GetEnvironmentVariable("FATHOM_CUDA_PROFILE_REPLAY"), out long n) ? n : 0;
        return times || replay > 0 ? new StepTimer(context, times, replay) : null;
    }

    /// <summary>A decode step starts; the stream was just synchronized, so the last replay's events are complete.</summary>
    public void BeginStep()
    {
        long now = Stopwatch.GetTimestamp();
        if (_pending)
        {
            _gpuMs += context.Driver.ElapsedMilliseconds(_start, _end);
            _pending = false;
        }
        if (_previousStepStart != 0)
        {
            _periodMs += Stopwatch.GetElapsedTime(_previousStepStart, now).TotalMilliseconds;
            _periods++;
        }
        _previousStepStart = _stepStart = now;
    }

    /// <summary>A pass that is no replayed or recorded decode step (a prompt, a batch, a plain step) runs: the period across it is not a step's.</summary>
    public void Interrupt() => _previousStepStart = 0;

    /// <summary>A replay starts; <paramref name="walked"/> says whether the host walked the model code for it (a check) or not (a verified step).</summary>
    public void BeforeReplay(bool walked)
    {
        _replays++;
        if (!walked) _unwalked++;
        _walkMs += Stopwatch.GetElapsedTime(_stepStart).TotalMilliseconds;
        if (_replays == profiledReplay)
        {
            context.Synchronize("the profiled step's start");
            context.Driver.ProfilerRange(start: true);
        }
        if (!times) return;
        if (_start == IntPtr.Zero) (_start, _end) = (context.Driver.CreateEvent(), context.Driver.CreateEvent());
        context.Driver.RecordEvent(_start, context.Stream);
    }

    public void AfterReplay()
    {
        if (times)
        {
            context.Driver.RecordEvent(_end, context.Stream);
            _pending = true;
        }
        if (_replays == profiledReplay)
        {
            context.Synchronize("the profiled step");
            context.Driver.ProfilerRange(start: false);
        }
    }

    /// <summary>A token selection was read from the end of a step's graph (CudaBackend.SelectsInGraph).</summary>
    public void SelectedInGraph() => _selectionsInGraph++;

    public void Dispose()
    {
        if (_start != IntPtr.Zero)
        {
            context.Synchronize("the step timer");
            if (_pending) _gpuMs += context.Driver.ElapsedMilliseconds(_start, _end);
            context.Driver.DestroyEvent(_start);
            context.Driver.DestroyEvent(_end);
        }
        if (!times || _replays == 0) return;
        Console.Error.WriteLine(
            $"replayed decode steps: {_replays} ({_unwalked} without the walk); host walk {1000 * _walkMs / _replays:F1} µs, graph GPU {1000 * _gpuMs / _replays:F1} µs, " +
            $"step period {(_periods == 0 ? 0 : 1000 * _periodMs / _periods):F1} µs (mean per step); {_selectionsInGraph} token selections ended their step's graph");
    }
}
