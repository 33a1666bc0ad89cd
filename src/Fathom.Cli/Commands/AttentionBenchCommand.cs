using System.CommandLine;
using Fathom.Cuda;
using Fathom.Cuda.Discovery;
using Fathom.Runtime;

namespace Fathom.Cli.Commands;

/// <summary>
/// <c>fathom bench-attention</c>: the GPU's decode attention alone, one token at the end of a cache of each length, for
/// Qwen2-1.5B's grouped-query shape and DeepSeek's MLA latent form (V3's 16 heads, R1's 128): GPU time per call of
/// the one-block-per-head kernel, of the general chunked flash-decoding kernel and, for the shapes it takes, of the
/// grouped one (<see cref="CudaBackend.GroupedDecodeAttention"/>) or MLA's (<see cref="CudaBackend.MlaDecodeAttention"/>,
/// in the "grouped" columns) in the same run
/// (<see cref="CudaBackend.MeasureAttention"/>: calls replayed from a CUDA graph, timed by events), and how far
/// the chunked kernels' outputs differ from the one-block-per-head kernel's.
/// </summary>
public static class AttentionBenchCommand
{
    /// <summary>A benchmarked shape: query heads, cache heads, key and value widths, values inside the key rows.</summary>
    public sealed record Case(string Name, int Heads, int KvHeads, int KeyDim, int ValueDim, bool ValuesInKeys);

    public static readonly Case[] Cases =
    [
        new("qwen2-1.5b GQA 12/2 x 128", 12, 2, 128, 128, false),
        new("llama-3-8b GQA 32/8 x 128", 32, 8, 128, 128, false),
        new("deepseek-v3 MLA 16 x 576/512", 16, 1, 576, 512, true),
        new("deepseek-r1 MLA 128 x 576/512", 128, 1, 576, 512, true),
    ];

    public static Command Create()
    {
        var lengths = new Option<int[]>("--lengths")
        {
            Description = "Cache lengths to attend over (default 512 4096 16384).", AllowMultipleArgumentsPerToken = true,
            DefaultValueFactory = _ => [512, 4096, 16384],
        };
        var calls = new Option<int>("--calls") { Description = "Calls per measurement (default 50).", DefaultValueFactory = _ => 50 };
        var device = new Option<int>("--device") { Description = "The GPU (default 0).", DefaultValueFactory = _ => 0 };
        var command = new Command("bench-attention", "Measure the GPU's decode attention kernels (one block per head against the chunked ones) for Qwen, Llama and MLA shapes.");
        command.Options.Add(lengths);
        command.Options.Add(calls);
        command.Options.Add(device);
        command.SetAction(r => CommandErrors.Guard(r.InvocationConfiguration.Error,
            () => Run(r.GetValue(lengths) ?? [], r.GetValue(calls), r.GetValue(device), r.InvocationConfiguration.Output, r.InvocationConfiguration.Error)));
        return command;
    }

    public static int Run(IReadOnlyList<int> lengths, int calls, int device, TextWriter output, TextWriter error)
    {
        if (lengths.Count == 0 || lengths.Any(l => l < 1)) throw new ArgumentException("--lengths takes positive cache lengths");
        if (calls < 1) throw new ArgumentException("--calls must be at least 1");
        CudaEnvironment environment = CudaEnvironment.Detect();
        if (!environment.Usable)
        {
            error.WriteLine($"error: no usable CUDA GPU: {environment.Problem}");
            return 1;
        }
        using var cuda = new CudaBackend(device);
        output.WriteLine($"{cuda.Device.Name}, {calls} calls per measurement, GPU time per call (µs)");
        output.WriteLine($"{"shape",-32} {"length",7} {"per head",10} {"chunked",10} {"grouped",10} {"speedup",8} {"rel. L2",9} {"grouped L2",10}");
        var random = new Random(1);
        int capacity = lengths.Max();
        foreach (Case c in Cases)
        {
            var shape = new AttentionShape(c.Heads, c.KvHeads, c.KeyDim, c.ValueDim, 1f / MathF.Sqrt(c.KeyDim));
            var cache = new KvLayerCache(capacity, c.KvHeads * c.KeyDim, c.ValuesInKeys ? c.KvHeads * c.KeyDim : c.KvHeads * c.ValueDim, c.ValuesInKeys);
            Fill(random, cache.Keys);
            if (!c.ValuesInKeys) Fill(random, cache.Values);
            float[] queries = GC.AllocateArray<float>(c.Heads * c.KeyDim, pinned: true);
            float[] perHead = GC.AllocateArray<float>(c.Heads * c.ValueDim, pinned: true), chunked = GC.AllocateArray<float>(c.Heads * c.ValueDim, pinned: true);
            float[] grouped = GC.AllocateArray<float>(c.Heads * c.ValueDim, pinned: true);
            bool groups = CudaBackend.GroupedDecodeFits(shape, cache.KeyWidth, cache.ValueStride)
                || CudaBackend.MlaDecodeFits(shape, cache.KeyWidth, cache.ValueStride, c.ValuesInKeys);
            Fill(random, queries);
            foreach (float[] buffer in c.ValuesInKeys ? new[] { cache.Keys, queries, perHead, chunked, grouped } : [cache.Keys, cache.Values, queries, perHead, chunked, grouped])
                cuda.Attach(buffer);
            foreach (int length in lengths)
            {
                cuda.DecodeAttention = false;
                double old = cuda.MeasureAttention(queries, cache, perHead, shape, length - 1, 1, calls);
                cuda.DecodeAttention = true;
                cuda.GroupedDecodeAttention = false;
                cuda.MlaDecodeAttention = false;
                double general = cuda.MeasureAttention(queries, cache, chunked, shape, length - 1, 1, calls);
                cuda.GroupedDecodeAttention = true;
                cuda.MlaDecodeAttention = true;
                double now = groups ? cuda.MeasureAttention(queries, cache, grouped, shape, length - 1, 1, calls) : general;
                cuda.ReadToHost(perHead);
                cuda.ReadToHost(chunked);
                if (groups) cuda.ReadToHost(grouped);
                string groupedColumns = groups ? $"{now,10:F2}" : $"{"-",10}", groupedError = groups ? $"{RelativeL2(grouped, perHead),10:E1}" : $"{"-",10}";
                output.WriteLine($"{c.Name,-32} {length,7} {old,10:F2} {general,10:F2} {groupedColumns} {old / now,7:F1}x {RelativeL2(chunked, perHead),9:E1} {groupedError}");
            }
        }
        return 0;
    }

    private static void Fill(Random random, float[] values)
    {
        for (int i = 0; i < values.Length; i++) values[i] = 2f * random.NextSingle() - 1f;
    }

    private static double RelativeL2(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double difference = 0, norm = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = (double)a[i] - b[i];
            difference += d * d;
            norm += (double)b[i] * b[i];
        }
        return Math.Sqrt(difference / norm);
    }
}
