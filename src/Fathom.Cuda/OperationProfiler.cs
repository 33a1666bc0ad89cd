using System.Diagnostics;
using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// Per-operation timing for finding where a forward pass spends its time (FATHOM_CUDA_PROFILE=1): each operation's
/// host time, and its GPU time between two events recorded around it on the stream. Recording events and waiting
/// for them at each pass changes the timing it measures, so this is a diagnostic, never on by default. The table is
/// written to standard error when the backend is disposed.
/// </summary>
internal sealed class OperationProfiler(CudaContext context) : IDisposable
{
    private readonly Dictionary<string, Totals> _totals = new(StringComparer.Ordinal);
    private readonly List<(string Name, IntPtr Start, IntPtr End)> _pending = [];
    private readonly Stack<IntPtr> _free = new();

    private sealed class Totals
    {
        public long Count;
        public double HostMilliseconds, GpuMilliseconds;
    }

    public static OperationProfiler? FromEnvironment(CudaContext context) =>
        Environment.GetEnvironmentVariable("FATHOM_CUDA_PROFILE") == "1" ? new OperationProfiler(context) : null;

    public Scope Measure(string name)
    {
        IntPtr start = Event();
        context.Driver.RecordEvent(start, context.Stream);
        return new Scope(this, name, start, Stopwatch.GetTimestamp());
    }

    public readonly struct Scope(OperationProfiler profiler, string name, IntPtr start, long hostStart) : IDisposable
    {
        public void Dispose() => profiler.End(name, start, hostStart);
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
        Console.Error.WriteLine($"{"operation",-28} {"count",8} {"host ms",10} {"GPU ms",10} {"GPU µs each",12}");
        foreach ((string name, Totals t) in _totals.OrderByDescending(p => p.Value.GpuMilliseconds))
            Console.Error.WriteLine($"{name,-28} {t.Count,8} {t.HostMilliseconds,10:F2} {t.GpuMilliseconds,10:F2} {1000 * t.GpuMilliseconds / t.Count,12:F2}");
        while (_free.Count > 0) context.Driver.DestroyEvent(_free.Pop());
    }
}
