using System.Diagnostics;
using Fathom.Quants;
using Fathom.Tests.Reference;

namespace Fathom.Benchmarks;

/// <summary>
/// A load-tolerant companion to <see cref="QuantDotBenchmarks"/>: ggml's vec_dot and Fathom's Dot on the same 64
/// in-cache rows of 4096 values (64 distinct rows quantized by ggml, as the benchmark's tile), single thread,
/// alternating between the two thousands of times and keeping each side's fastest pass. A pass takes tens of
/// microseconds, so some run uninterrupted even on a machine where most 64 MiB passes are preempted; the ratio of the
/// minima then compares the kernels' compute, not the machine's load. (In cache, so it leaves out memory bandwidth,
/// which the 64 MiB benchmark includes.)
/// </summary>
/// <remarks>
/// Every type's kernels are first warmed up with pauses until the JIT compiles nothing new, so its background tier-1
/// compilation has finished before any pass is timed (on a busy machine it can take longer than one type's whole measurement). The passes are then
/// spread over <see cref="Sweeps"/> sweeps across all types, so a burst of load from other processes cannot cover all
/// of one type's samples. Run: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --interleaved-dot [Q4_K,IQ1_S,...]
/// </remarks>
public static unsafe class InterleavedDotComparison
{
    private const int RowLength = 4096, Rows = 64, Sweeps = 6, RoundsPerSweep = 600, MinWarmupRounds = 4, MaxWarmupRounds = 40;

    public static void Run(IReadOnlyList<GgmlType> types, TextWriter output)
    {
        output.WriteLine($"In-cache dot, {Rows} rows × {RowLength}, single thread, fastest of {Sweeps}×{RoundsPerSweep} interleaved passes each");
        output.WriteLine($"Start {DateTime.UtcNow:HH:mm:ss} UTC, {LoadAverage()}");
        Case[] cases = [.. types.Select(t => new Case(t))];
        // Warm up until the JIT has compiled nothing new for a whole round (tier-1 and OSR code installed); under heavy
        // load the background compilation can lag by seconds.
        long compiled = -1;
        for (int round = 0; round < MaxWarmupRounds; round++)
        {
            foreach (Case c in cases) c.Measure(rounds: 20);
            Thread.Sleep(150);
            long now = System.Runtime.JitInfo.GetCompiledMethodCount();
            if (round >= MinWarmupRounds && now == compiled) break;
            compiled = now;
        }
        foreach (Case c in cases) c.ResetTimes();
        var sweepRatios = new List<double>[cases.Length];
        for (int i = 0; i < cases.Length; i++) sweepRatios[i] = [];
        for (int sweep = 0; sweep < Sweeps; sweep++)
        {
            for (int i = 0; i < cases.Length; i++)
            {
                (double ggml, double fathom) = cases[i].Measure(RoundsPerSweep);
                sweepRatios[i].Add(ggml / fathom);
            }
        }
        output.WriteLine("Type       ggml µs   Fathom µs   speed (ggml / Fathom)   per sweep (min–max)");
        for (int i = 0; i < cases.Length; i++)
        {
            Case c = cases[i];
            output.WriteLine($"{c.Type,-8} {c.BestGgml,9:F2} {c.BestFathom,11:F2}   {c.BestGgml / c.BestFathom,6:F3}                  {sweepRatios[i].Min():F3}–{sweepRatios[i].Max():F3}");
        }
        output.WriteLine($"End {DateTime.UtcNow:HH:mm:ss} UTC, {LoadAverage()}");
    }

    private static string LoadAverage()
    {
        try
        {
            string[] parts = File.ReadAllText("/proc/loadavg").Split(' ');
            return $"load average {parts[0]} {parts[1]} {parts[2]}";
        }
        catch (IOException)
        {
            return "load average unknown";
        }
    }

    /// <summary>One type's rows and the fastest pass seen so far on each side.</summary>
    private sealed class Case
    {
        private readonly WeightFormat _format;
        private readonly int _rowBytes;
        private readonly byte[] _weights, _activations;
        private readonly delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> _vecDot;
        private float _sink;

        public Case(GgmlType type)
        {
            Type = type;
            _format = TypeTraits.For(type);
            _rowBytes = (int)_format.Layout.RowBytes(RowLength);
            var rng = new Random(1);
            var values = new float[Rows * RowLength];
            for (int i = 0; i < values.Length; i++) values[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
            float[] importance = _format.RequiresImportance ? Enumerable.Repeat(1f, RowLength).ToArray() : [];
            _weights = GgmlQuants.Quantize(type, values, Rows, RowLength, importance);
            _activations = GgmlQuants.QuantizeActivations(_format.DotActivationType, values.AsSpan(0, RowLength));
            _vecDot = GgmlQuants.VecDotPointer(type);
            ResetTimes();
        }

        public GgmlType Type { get; }
        public double BestGgml { get; private set; }
        public double BestFathom { get; private set; }

        public void ResetTimes() => (BestGgml, BestFathom) = (double.MaxValue, double.MaxValue);

        /// <summary>Alternates ggml and Fathom passes; returns this call's fastest pass of each (µs) and folds them into the overall best.</summary>
        public (double Ggml, double Fathom) Measure(int rounds)
        {
            double ggml = double.MaxValue, fathom = double.MaxValue;
            float result;
            fixed (byte* w = _weights)
            fixed (byte* a = _activations)
            {
                for (int round = 0; round < rounds; round++)
                {
                    // Alternate which side goes first, so neither always follows the other's cache state.
                    for (int k = 0; k < 2; k++)
                    {
                        bool ggmlTurn = (round + k) % 2 == 0;
                        long start = Stopwatch.GetTimestamp();
                        if (ggmlTurn)
                        {
                            for (int r = 0; r < Rows; r++)
                            {
                                _vecDot(RowLength, &result, 0, w + (long)r * _rowBytes, 0, a, 0, 1);
                                _sink += result;
                            }
                        }
                        else
                        {
                            for (int r = 0; r < Rows; r++) _sink += _format.Dot(_weights.AsSpan(r * _rowBytes, _rowBytes), _activations, RowLength);
                        }
                        double microseconds = (Stopwatch.GetTimestamp() - start) * 1e6 / Stopwatch.Frequency;
                        if (ggmlTurn) ggml = Math.Min(ggml, microseconds);
                        else fathom = Math.Min(fathom, microseconds);
                    }
                }
            }
            BestGgml = Math.Min(BestGgml, ggml);
            BestFathom = Math.Min(BestFathom, fathom);
            return (ggml, fathom);
        }
    }
}
