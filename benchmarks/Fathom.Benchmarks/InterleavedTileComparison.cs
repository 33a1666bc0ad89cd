using System.Diagnostics;
using Fathom.Quants;
using Fathom.Quants.Gemm;

namespace Fathom.Benchmarks;

/// <summary>
/// A load-tolerant comparison of tile kernels on one in-cache tile, single thread: for each type, the kernel
/// <see cref="TileKernels.For"/> picks against the kernel it replaced (<see cref="TileKernels.ReplacedKernel"/>), on the
/// same 64 rows × 64 tokens, alternating thousands of times and keeping each side's fastest pass (as
/// <see cref="InterleavedDotComparison"/> does for single-row dots). Reports multiply-accumulates per nanosecond, so
/// the figure can be set against the core's clock. In cache: it measures the kernels' compute, not the tiling.
/// </summary>
/// <remarks>Run: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --interleaved-tile [Q4_K,Q6_K,...]</remarks>
public static unsafe class InterleavedTileComparison
{
    private const int Rows = 64, Tokens = 64, Rounds = 400;

    public static void Run(IReadOnlyList<GgmlType> types, int n, TextWriter output)
    {
        output.WriteLine($"In-cache tile, {Rows} rows × {Tokens} tokens × {n}, single thread, fastest of {Rounds} interleaved passes each");
        output.WriteLine("Type     Kernel (picked)                          µs   MAC/ns   Replaced kernel µs   MAC/ns   speed-up");
        foreach (GgmlType type in types)
        {
            WeightFormat format = TypeTraits.For(type);
            TileKernel picked = TileKernels.For(format);
            TileKernel? baseline = TileKernels.ReplacedKernel(format);
            (double pickedTime, double baselineTime) = Measure(format, n, picked, baseline ?? picked);
            double macs = (double)Rows * Tokens * n / 1000;
            output.WriteLine($"{type,-8} {picked.GetType().Name,-36} {pickedTime,9:F1} {macs / pickedTime,8:F2}   {baselineTime,18:F1} {macs / baselineTime,8:F2}   {baselineTime / pickedTime,7:F2}");
        }
    }

    private static (double Picked, double Baseline) Measure(WeightFormat format, int n, TileKernel picked, TileKernel baseline)
    {
        WeightFormat activation = TypeTraits.For(format.DotActivationType);
        int weightRowBytes = (int)format.Layout.RowBytes(n), activationRowBytes = (int)activation.Layout.RowBytes(n);
        var rng = new Random(1);
        var values = new float[Rows * n];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        float[] importance = format.RequiresImportance ? Enumerable.Repeat(1f, n).ToArray() : [];
        byte[] weights = GC.AllocateArray<byte>(Rows * weightRowBytes, pinned: true);
        byte[] activations = GC.AllocateArray<byte>(Tokens * activationRowBytes, pinned: true);
        for (int r = 0; r < Rows; r++) format.Quantize(values.AsSpan(r * n, n), weights.AsSpan(r * weightRowBytes, weightRowBytes), importance);
        for (int t = 0; t < Tokens; t++) activation.Quantize(values.AsSpan(t % Rows * n, n), activations.AsSpan(t * activationRowBytes, activationRowBytes), []);
        float[] output = GC.AllocateArray<float>(Rows * Tokens, pinned: true);
        double bestPicked = double.MaxValue, bestBaseline = double.MaxValue;
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        fixed (float* y = output)
        {
            for (int round = 0; round < Rounds; round++)
            {
                for (int k = 0; k < 2; k++)
                {
                    bool pickedTurn = (round + k) % 2 == 0;
                    TileKernel kernel = pickedTurn ? picked : baseline;
                    long start = Stopwatch.GetTimestamp();
                    kernel.Multiply(w, weightRowBytes, Rows, a, activationRowBytes, Tokens, n, y, Rows);
                    double microseconds = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
                    if (pickedTurn) bestPicked = Math.Min(bestPicked, microseconds);
                    else bestBaseline = Math.Min(bestBaseline, microseconds);
                }
            }
        }
        return (bestPicked, bestBaseline);
    }
}
