using System.Diagnostics;
using System.Globalization;
using Fathom.Cpu;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Benchmarks;

/// <summary>
/// Where a prompt's time goes: one P-token prompt through a cached synthetic preset (as the side-by-side runner builds
/// it) on a <see cref="CpuBackend"/> wrapped in a stopwatch per backend operation, products grouped by tensor role
/// (the name without its layer number) and weight type, then the activation quantization alone (the products' first
/// step) timed separately for each activation shape seen. A diagnostic, not a BenchmarkDotNet class: it says which
/// kernel to work on, the BenchmarkDotNet classes say whether the work paid.
/// <code>dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --profile-pp [preset] [-t 2] [-p 512] [-r 2]</code>
/// </summary>
public static class PromptProfile
{
    public static int Run(string[] args)
    {
        string preset = "r1-distill-qwen-1.5b:q4_k_m";
        int threads = 2, prompt = 512, repetitions = 2;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "-t": threads = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "-p": prompt = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "-r": repetitions = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                default: preset = args[i]; break;
            }
        }
        if (!RealModelPresets.TryGet(preset, out RealModelPreset found))
        {
            Console.Error.WriteLine($"error: unknown preset '{preset}'");
            return 2;
        }
        string path = SyntheticModelCache.GetOrCreate(found.Blueprint());
        var timing = new TimingBackend(new CpuBackend(threads));
        using Model model = ModelLoader.Load(path, new ModelOptions { Threads = threads, Backend = _ => timing });
        InferenceSession session = model.CreateSession(prompt + 16);
        int[] tokens = [.. Enumerable.Range(1000, prompt)];
        var logits = new float[model.VocabSize];

        // The first prompt maps the weights and runs the JIT; the timed ones follow.
        model.Forward(session, tokens.AsSpan(0, Math.Min(16, prompt)), logits);
        timing.Clear();
        long start = Stopwatch.GetTimestamp();
        for (int r = 0; r < repetitions; r++)
        {
            session.Reset();
            model.Forward(session, tokens, logits);
        }
        double total = Stopwatch.GetElapsedTime(start).TotalSeconds / repetitions;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{preset}: pp{prompt}, {threads} threads, {total:F2} s per prompt ({prompt / total:F1} t/s), mean of {repetitions}"));
        double accounted = 0;
        foreach ((string key, double seconds, int calls) in timing.Totals().OrderByDescending(e => e.Seconds))
        {
            double perPrompt = seconds / repetitions;
            accounted += perPrompt;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {key,-40} {perPrompt * 1000,9:F1} ms {perPrompt / total,6:P1}  ({calls / repetitions} calls)"));
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {"(outside the backend)",-40} {(total - accounted) * 1000,9:F1} ms {(total - accounted) / total,6:P1}"));

        // The products above include quantizing their inputs; this is that step alone, per activation shape.
        Console.WriteLine("Activation quantization alone (included in the products above):");
        foreach ((GgmlType type, int columns, int calls) in timing.Quantizations())
        {
            if (type == GgmlType.F32) continue;
            WeightFormat format = TypeTraits.For(type);
            int rowBytes = (int)format.Layout.RowBytes(columns);
            var input = new float[columns];
            for (int i = 0; i < columns; i++) input[i] = MathF.Sin(i);
            var output = new byte[rowBytes];
            long q = Stopwatch.GetTimestamp();
            for (int t = 0; t < prompt; t++) format.Quantize(input, output, []);
            double seconds = Stopwatch.GetElapsedTime(q).TotalSeconds * calls / repetitions / threads;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {type} × {columns,-6} {seconds * 1000,9:F1} ms {seconds / total,6:P1}  ({calls / repetitions} products, split over {threads} threads)"));
        }
        return 0;
    }

    /// <summary>A backend that times each operation of the one it wraps.</summary>
    private sealed class TimingBackend(IComputeBackend inner) : IComputeBackend
    {
        private readonly Dictionary<string, (double Seconds, int Calls)> _totals = [];
        private readonly Dictionary<(GgmlType, int), int> _quantizations = [];

        public int Threads => inner.Threads;

        public void Clear() { _totals.Clear(); _quantizations.Clear(); }

        public IEnumerable<(string Key, double Seconds, int Calls)> Totals() => _totals.Select(e => (e.Key, e.Value.Seconds, e.Value.Calls));

        public IEnumerable<(GgmlType Type, int Columns, int Calls)> Quantizations() => _quantizations.Select(e => (e.Key.Item1, e.Key.Item2, e.Value));

        private void Add(string key, long start)
        {
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            _totals[key] = _totals.TryGetValue(key, out var old) ? (old.Seconds + seconds, old.Calls + 1) : (seconds, 1);
        }

        /// <summary>"blk.3.ffn_up.weight" → "ffn_up Q4_K [1536 × 8960]".</summary>
        private static string Role(WeightMatrix weight)
        {
            string[] parts = weight.Name.Split('.');
            string role = parts.Length >= 3 && parts[0] == "blk" ? string.Join('.', parts[2..^1]) : weight.Name;
            return $"{role} {weight.Format.Type} [{weight.Columns} × {weight.Rows}]";
        }

        public void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens)
        {
            long start = Stopwatch.GetTimestamp();
            inner.MatMul(weight, input, output, tokens);
            Add($"{(tokens > 1 ? "" : "1 token: ")}{Role(weight)}", start);
            var key = (weight.Format.DotActivationType, weight.Columns);
            if (tokens > 1) _quantizations[key] = _quantizations.GetValueOrDefault(key) + 1;
        }

        // The grouped products must reach the wrapped backend: the interface's defaults (a MatMul per matrix, and
        // transposed products on the calling thread alone) are not what the CPU backend runs, and the single-threaded
        // transposed default once showed up as 16 % "outside the backend" for V2-Lite's fused attn_kv_b.
        public void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
        {
            long start = Stopwatch.GetTimestamp();
            inner.MatMulGroup(weights, inputs, inputStride, outputs, outputStride);
            Add($"group of {weights.Length}: {Role(weights[0])}", start);
        }

        public void TransposedMatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
            int tokens = 1, int inputTokenStride = 0, int outputTokenStride = 0)
        {
            long start = Stopwatch.GetTimestamp();
            inner.TransposedMatMulGroup(weights, inputs, inputStride, outputs, outputStride, tokens, inputTokenStride, outputTokenStride);
            Add($"{(tokens > 1 ? "" : "1 token: ")}transposed group of {weights.Length}: {Role(weights[0])}", start);
        }

        public void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon)
        {
            long start = Stopwatch.GetTimestamp();
            inner.RmsNorm(input, weight, output, tokens, epsilon);
            Add("RmsNorm", start);
        }

        public void Rope(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition)
        {
            long start = Stopwatch.GetTimestamp();
            inner.Rope(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition);
            Add("Rope", start);
        }

        public void SiluMul(Span<float> gate, ReadOnlySpan<float> up)
        {
            long start = Stopwatch.GetTimestamp();
            inner.SiluMul(gate, up);
            Add("SiluMul", start);
        }

        public void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens)
        {
            long start = Stopwatch.GetTimestamp();
            inner.Attention(queries, cache, output, shape, firstPosition, tokens);
            Add("Attention", start);
        }

        public void Dispose() => inner.Dispose();
    }
}
