using System.Diagnostics;
using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// Per-operation timing for finding where a forward pass spends its time (FATHOM_CUDA_PROFILE=1): each operation's
/// host time, and its GPU time between two events recorded around it on the stream. Recording events and waiting
/// for them at each pass changes the timing it measures, so this is a diagnostic, never on by default. The table is
/// written to standard error when the backend is disposed.
/// FATHOM_CUDA_PROFILE=prompts measures only passes of at least <see cref="PromptTokens"/> tokens after the first such
/// pass (which uploads the weights), leaves decode steps to their graphs and short passes (a benchmark's generation
/// prompts) alone, and adds the passes' own host time: what the model code spends between the operations is the
/// pass's time less the operations'.
/// </summary>
internal sealed class OperationProfiler(CudaContext context, bool promptsOnly) : IDisposable
{
    private readonly Dictionary<string, Totals> _totals = new(StringComparer.Ordinal);
    private bool _active = !promptsOnly;
    private int _promptPasses, _measuredPasses;
    private long _passStart;
    private double _passHostMilliseconds;

    /// <summary>The shortest pass measured under FATHOM_CUDA_PROFILE=prompts.</summary>
    public const int PromptTokens = 64;

    /// <summary>Whether decode steps may still run as graphs: only prompt passes are measured.</summary>
    public bool PromptsOnly => promptsOnly;
    private readonly List<(string Name, IntPtr Start, IntPtr End)> _pending = [];
    private readonly Stack<IntPtr> _free = new();

    private sealed class Totals
    {
        public long Count;
        public double HostMilliseconds, GpuMilliseconds;
    }

    public static OperationProfiler? FromEnvironment(CudaContext context) => Environment.GetEnvironmentVariable("FATHOM_CUDA_PROFILE") switch
    {
        "1" => new OperationProfiler(context, promptsOnly: false),
        "prompts" => new OperationProfiler(context, promptsOnly: true),
        _ => null,
    };

    public void BeginForward(int tokens)
    {
        if (!promptsOnly) return;
        _active = tokens >= PromptTokens && ++_promptPasses > 1;
        if (_active) _passStart = Stopwatch.GetTimestamp();
    }

    public void EndForward()
    {
        if (!promptsOnly || !_active) return;
        _passHostMilliseconds += Stopwatch.GetElapsedTime(_passStart).TotalMilliseconds;
        _measuredPasses++;
        _active = false;
    }

    public Scope Measure(string name)
    {
        if (!_active) return default;
        IntPtr start = Event();
        context.Driver.RecordEvent(start, context.Stream);
        return new Scope(this, name, start, Stopwatch.GetTimestamp());
    }

    public readonly struct Scope(OperationProfiler profiler, string name, IntPtr start, long hostStart) : IDisposable
    {
        public void Dispose()
        {
            if (start != IntPtr.Zero) profiler.End(name, start, hostStart);
        }
    }

    private void End(string name, IntPtr start, long hostStart)
    {
        IntPtr end = Event();
        context.Driver.RecordEvent(end, context.Stream);
        Totals totals = For(name);
        totals.Count++;
        totals.HostMilliseconds += Stopwatch.GetElapsedTime(hostStart).TotalMilliseconds;
        _pending.Add((name, start, end));
        if (_pending.Count >= 4096) Harvest();
    }

    private Totals For(string name)
    {
        if (!_totals.TryGetValue(name, out Totals? totals)) _totals[name] = totals = new Totals();
        return totals;
    }

    private IntPtr Event() => _free.Count > 0 ? _free.Pop() : context.Driver.CreateEvent();

    private void Harvest()
    {
        context.Synchronize("profiled operations");
        foreach ((string name, IntPtr start, IntPtr end) in _pending)
        {
            For(name).GpuMilliseconds += context.Driver.ElapsedMilliseconds(start, end);
            _free.Push(start);
            _free.Push(end);
        }
        _pending.Clear();
    }

    public void Dispose()
    {
        Harvest();
        if (promptsOnly)
        {
            double inOperations = _totals.Values.Sum(t => t.HostMilliseconds), passes = Math.Max(_measuredPasses, 1);
            Console.Error.WriteLine($"prompt passes measured: {_measuredPasses}; host ms per pass: {_passHostMilliseconds / passes:F2}, "
                + $"in operations {inOperations / passes:F2}, between them {(_passHostMilliseconds - inOperations) / passes:F2}");
        }
        Console.Error.WriteLine($"{"operation",-28} {"count",8} {"host ms",10} {"GPU ms",10} {"GPU µs each",12}");
        foreach ((string name, Totals t) in _totals.OrderByDescending(p => p.Value.GpuMilliseconds))
            Console.Error.WriteLine($"{name,-28} {t.Count,8} {t.HostMilliseconds,10:F2} {t.GpuMilliseconds,10:F2} {1000 * t.GpuMilliseconds / t.Count,12:F2}");
        while (_free.Count > 0) context.Driver.DestroyEvent(_free.Pop());
    }
}
