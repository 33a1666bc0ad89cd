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
/// <remarks>Run: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --interleaved-dot [Q4_K,IQ1_S,...]</remarks>
public static unsafe class InterleavedDotComparison
{
    private const int RowLength = 4096, Rows = 64, Rounds = 3000;

    public static void Run(IReadOnlyList<GgmlType> types, TextWriter output)
    {
        output.WriteLine($"In-cache dot, {Rows} rows × {RowLength}, single thread, fastest of {Rounds} interleaved passes each");
        output.WriteLine("Type       ggml µs   Fathom µs   speed (ggml / Fathom)");
        foreach (GgmlType type in types)
        {
            (double ggml, double fathom) = Measure(type);
            output.WriteLine($"{type,-8} {ggml,9:F1} {fathom,11:F1}   {ggml / fathom,6:F2}");
        }
    }

    private static (double Ggml, double Fathom) Measure(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        int rowBytes = (int)format.Layout.RowBytes(RowLength);
        var rng = new Random(1);
        var values = new float[Rows * RowLength];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        float[] importance = format.RequiresImportance ? Enumerable.Repeat(1f, RowLength).ToArray() : [];
        byte[] weights = GgmlQuants.Quantize(type, values, Rows, RowLength, importance);
        byte[] activations = GgmlQuants.QuantizeActivations(format.DotActivationType, values.AsSpan(0, RowLength));
        var vecDot = GgmlQuants.VecDotPointer(type);
        double bestGgml = double.MaxValue, bestFathom = double.MaxValue;
        float sink = 0, result;
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            for (int round = 0; round < Rounds; round++)
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
                            vecDot(RowLength, &result, 0, w + (long)r * rowBytes, 0, a, 0, 1);
                            sink += result;
                        }
                    }
                    else
                    {
                        for (int r = 0; r < Rows; r++) sink += format.Dot(weights.AsSpan(r * rowBytes, rowBytes), activations, RowLength);
                    }
                    double microseconds = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
                    if (ggmlTurn) bestGgml = Math.Min(bestGgml, microseconds);
                    else bestFathom = Math.Min(bestFathom, microseconds);
                }
            }
        }
        GC.KeepAlive(sink);
        return (bestGgml, bestFathom);
    }
}
