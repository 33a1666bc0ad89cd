using System.Globalization;
using System.Text.Json.Nodes;
using Fathom.Cuda;
using Fathom.Cuda.Discovery;
using Fathom.Quants;

namespace Fathom.Cli.Commands;

/// <summary>
/// <c>fathom bench --gpu-kernels</c>: each weight type's one-token product on the GPU, the float kernel against the
/// integer one in the same run (<see cref="OneTokenProductBenchmark"/>), in GB/s of weights read and as a fraction of the
/// GPU's measured read bandwidth.
/// </summary>
public static class GpuKernelBench
{
    /// <summary>The types with an integer kernel, in the order of the model mixes that use them.</summary>
    private static readonly GgmlType[] Types = [GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q8_0, GgmlType.IQ2_XXS, GgmlType.IQ1_S, GgmlType.Q5_0, GgmlType.Q4_0, GgmlType.Q5_K];

    /// <summary>rows × columns: Qwen2-1.5B's FFN gate/up and down, R1's expert gate/up and down.</summary>
    private static readonly (int Rows, int Columns)[] Shapes = [(8960, 1536), (1536, 8960), (2048, 7168), (7168, 2048)];

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

    private static int Run(CudaBackend backend, bool json, TextWriter output)
    {
        double bandwidth = backend.MeasureReadBandwidth();
        IReadOnlyList<OneTokenProductTiming> timings = OneTokenProductBenchmark.Run(backend, Types, Shapes, Repetitions);
        if (json)
        {
            var rows = new JsonArray();
            foreach (OneTokenProductTiming t in timings)
                rows.Add(new JsonObject
                {
                    ["type"] = t.Type.ToString(), ["rows"] = t.Rows, ["columns"] = t.Columns, ["weight_bytes"] = t.WeightBytes,
                    ["float_us"] = t.FloatMicroseconds, ["integer_us"] = double.IsNaN(t.IntegerMicroseconds) ? null : t.IntegerMicroseconds,
                });
            output.WriteLine(new JsonObject { ["device"] = backend.Device.Name, ["read_bandwidth_gbps"] = bandwidth, ["repetitions"] = Repetitions, ["products"] = rows }.ToJsonString());
            return 0;
        }
        output.WriteLine($"{backend.Device.Name}: measured read bandwidth {bandwidth:F0} GB/s; µs per product over {Repetitions} graph-replayed launches");
        output.WriteLine($"{"type",-8} {"rows×cols",-12} {"MB",7} {"float µs",9} {"GB/s",7} {"%bw",6} {"int µs",9} {"GB/s",7} {"%bw",6} {"speedup",8}");
        foreach (OneTokenProductTiming t in timings)
        {
            double oldRate = t.GigabytesPerSecond(t.FloatMicroseconds), newRate = t.GigabytesPerSecond(t.IntegerMicroseconds);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{t.Type,-8} {$"{t.Rows}×{t.Columns}",-12} {t.WeightBytes / 1e6,7:F2} {t.FloatMicroseconds,9:F2} {oldRate,7:F0} {100 * oldRate / bandwidth,5:F1}% {t.IntegerMicroseconds,9:F2} {newRate,7:F0} {100 * newRate / bandwidth,5:F1}% {t.FloatMicroseconds / t.IntegerMicroseconds,7:F2}×"));
        }
        return 0;
    }
}
