using System.Globalization;
using System.Text.Json.Nodes;
using Fathom.Cuda;
using Fathom.Cuda.Discovery;
using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cli.Commands;

/// <summary>
/// <c>fathom bench --gpu-kernels</c>: each weight type's one-token product on the GPU, the float kernel against the
/// integer one in the same run (<see cref="OneTokenProductBenchmark"/>), in GB/s of weights read and as a fraction of the
/// GPU's measured read bandwidth; then R1's grouped expert products (a token's eight experts in one launch). The integer
/// kernel is timed in the layout the backend picks and in every other one, and the fastest is shown beside it; IQ1_S and
/// IQ2_XXS also with their other kernels (global grid, shared grid, block tiles, row pairs), whichever the backend takes;
/// Q4_K and Q6_K also with their fast kernels (matvec_qk), at R1's large shapes too.
/// </summary>
public static class GpuKernelBench
{
    /// <summary>The types with an integer kernel, in the order of the model mixes that use them.</summary>
    private static readonly GgmlType[] Types = [GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q8_0, GgmlType.IQ2_XXS, GgmlType.IQ1_S, GgmlType.Q5_0, GgmlType.Q4_0, GgmlType.Q5_K];

    /// <summary>rows × columns: Qwen2-1.5B's FFN gate/up and down, R1's expert gate/up and down.</summary>
    private static readonly (int Rows, int Columns)[] Shapes = [(8960, 1536), (1536, 8960), (2048, 7168), (7168, 2048)];

    /// <summary>R1's large one-token products of the types with fast kernels (and Q6_K beside them): the attention output (o) and q_b.</summary>
    private static readonly (int Rows, int Columns)[] LargeShapes = [(7168, 16384), (24576, 1536)];

    private static readonly GgmlType[] LargeShapeTypes = [GgmlType.Q4_K, GgmlType.Q6_K];

    /// <summary>
    /// R1's routed experts, eight per token: gate/up 2048×7168 (IQ1_S; sixteen matrices: the gates and ups in one launch,
    /// as a decode step runs them), down 7168×2048 (IQ2_XXS or IQ1_S); V3-8l's Q4_K.
    /// </summary>
    public static readonly (GgmlType Type, int Rows, int Columns, int Matrices)[] Groups =
        [(GgmlType.IQ1_S, 2048, 7168, 8), (GgmlType.IQ1_S, 2048, 7168, 16), (GgmlType.IQ2_XXS, 7168, 2048, 8), (GgmlType.IQ1_S, 7168, 2048, 8), (GgmlType.Q4_K, 2048, 7168, 8)];

    public const int Repetitions = 400;

    public static int Run(bool json, TextWriter output, TextWriter error)
    {
        CudaEnvironment environment = CudaEnvironment.Detect();
        if (!environment.Usable)
        {
            error.WriteLine($"error: --gpu-kernels needs a usable CUDA GPU: {environment.Problem}");
            return 1;
        }
        CudaBackend backend;
        try
        {
            backend = new CudaBackend();
        }
        catch (Fathom.Cuda.Driver.CudaException e)
        {
            error.WriteLine($"error: --gpu-kernels needs a usable CUDA GPU: {e.Message}");
            return 1;
        }
        using (backend) return Run(backend, json, output);
    }

    /// <summary>The layout the global-grid kernel takes for the timing's shape (<see cref="QuantizedMatVec.LayoutFor"/>).</summary>
    private static MatVecLayout GlobalGridLayout(OneTokenProductTiming t) => QuantizedMatVec.LayoutFor(t.Type, (long)t.Rows * t.Matrices, t.Columns);

    private static int Run(CudaBackend backend, bool json, TextWriter output)
    {
        double bandwidth = backend.MeasureReadBandwidth();
        IReadOnlyList<OneTokenProductTiming> timings =
            [.. OneTokenProductBenchmark.Run(backend, Types, Shapes, Repetitions), .. OneTokenProductBenchmark.Run(backend, LargeShapeTypes, LargeShapes, Repetitions),
             .. OneTokenProductBenchmark.RunGrouped(backend, Groups, Repetitions)];
        if (json)
        {
            var rows = new JsonArray();
            foreach (OneTokenProductTiming t in timings)
            {
                var layouts = new JsonObject();
                foreach ((var layout, double us) in t.Layouts) layouts[layout.ToString()] = us;
                var fastLayouts = new JsonObject();
                foreach ((var layout, double us) in t.FastLayouts ?? []) fastLayouts[layout.ToString()] = us;
                var globalGrid = new JsonObject();
                foreach ((var layout, double us) in t.GlobalGridLayouts) globalGrid[layout.ToString()] = us;
                rows.Add(new JsonObject
                {
                    ["type"] = t.Type.ToString(), ["rows"] = t.Rows, ["columns"] = t.Columns, ["matrices"] = t.Matrices, ["weight_bytes"] = t.WeightBytes,
                    ["float_us"] = t.FloatMicroseconds, ["integer_us"] = double.IsNaN(t.IntegerMicroseconds) ? null : t.IntegerMicroseconds,
                    ["layout"] = t.Layout.ToString(), ["best_layout"] = t.Best.Layout.ToString(), ["layouts_us"] = layouts,
                    ["global_grid_layout"] = t.GlobalGridLayouts.Count == 0 ? null : GlobalGridLayout(t).ToString(),
                    ["global_grid_layouts_us"] = t.GlobalGridLayouts.Count == 0 ? null : globalGrid,
                    ["block_tile_us"] = double.IsNaN(t.BlockTileMicroseconds) ? null : t.BlockTileMicroseconds,
                    ["row_pair_us"] = double.IsNaN(t.RowPairMicroseconds) ? null : t.RowPairMicroseconds,
                    ["iq_kernels"] = t.Kernels.ToString(),
                    ["fast_us"] = double.IsNaN(t.FastMicroseconds) ? null : t.FastMicroseconds,
                    ["fast_layout"] = t.FastLayouts is null ? null : t.FastLayout.ToString(),
                    ["fast_layouts_us"] = t.FastLayouts is null ? null : fastLayouts,
                });
            }
            output.WriteLine(new JsonObject { ["device"] = backend.Device.Name, ["read_bandwidth_gbps"] = bandwidth, ["repetitions"] = Repetitions, ["products"] = rows }.ToJsonString());
            return 0;
        }
        output.WriteLine($"{backend.Device.Name}: measured read bandwidth {bandwidth:F0} GB/s; µs per product over {Repetitions} graph-replayed launches");
        output.WriteLine("(integer kernel in the picked layout, lanes×rows per thread; the fastest layout beside it)");
        output.WriteLine($"{"type",-8} {"rows×cols",-16} {"MB",7} {"float µs",9} {"GB/s",7} {"int µs",9} {"GB/s",7} {"%bw",6} {"speedup",8} {"layout",7} {"best",7} {"best µs",8}");
        foreach (OneTokenProductTiming t in timings)
        {
            double oldRate = t.GigabytesPerSecond(t.FloatMicroseconds), newRate = t.GigabytesPerSecond(t.IntegerMicroseconds);
            string shape = t.Matrices == 1 ? $"{t.Rows}×{t.Columns}" : $"{t.Matrices}×{t.Rows}×{t.Columns}";
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{t.Type,-8} {shape,-16} {t.WeightBytes / 1e6,7:F2} {t.FloatMicroseconds,9:F2} {oldRate,7:F0} {t.IntegerMicroseconds,9:F2} {newRate,7:F0} {100 * newRate / bandwidth,5:F1}% {t.FloatMicroseconds / t.IntegerMicroseconds,7:F2}× {t.Layout,7} {t.Best.Layout,7} {t.Best.Microseconds,8:F2}"));
            if (t.FastLayouts is { } fast)
            {
                (var bestFast, double bestFastTime) = fast.MinBy(l => l.Microseconds);
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{"",-8} {"(fast matvec_qk: µs, its speed over matvec_q)",-43} {t.FastMicroseconds,9:F2} {t.GigabytesPerSecond(t.FastMicroseconds),7:F0} {100 * t.GigabytesPerSecond(t.FastMicroseconds) / bandwidth,5:F1}% {t.IntegerMicroseconds / t.FastMicroseconds,7:F2}× {t.FastLayout,7} {bestFast,7} {bestFastTime,8:F2}"));
            }
            if (t.GlobalGridLayouts.Count > 0)
            {
                MatVecLayout oldLayout = GlobalGridLayout(t);
                double before = t.GlobalGridLayouts.First(l => l.Layout == oldLayout).Microseconds;
                (var bestLayout, double bestBefore) = t.GlobalGridLayouts.MinBy(l => l.Microseconds);
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{"",-8} {"(global-grid matvec_q: µs, its speed over it)",-43} {before,9:F2} {"",7} {"",6} {before / t.IntegerMicroseconds,7:F2}× {oldLayout,7} {bestLayout,7} {bestBefore,8:F2}"));
                double shared = t.Layouts.First(l => l.Layout == t.Layout).Microseconds;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{"",-8} {"(shared-grid matvec_iq; block-tile matvec_iqb: µs)",-43} {shared,9:F2} {t.GigabytesPerSecond(shared),7:F0} {"",6} {t.BlockTileMicroseconds,8:F2} {t.GigabytesPerSecond(t.BlockTileMicroseconds),7:F0} GB/s; {shared / t.BlockTileMicroseconds:F2}× ({t.Kernels} taken)"));
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{"",-8} {"(row-pair matvec_iqp: µs, its speed over the block tiles)",-43} {t.RowPairMicroseconds,9:F2} {t.GigabytesPerSecond(t.RowPairMicroseconds),7:F0} {"",6} {t.BlockTileMicroseconds / t.RowPairMicroseconds,7:F2}×"));
            }
        }
        return 0;
    }
}
