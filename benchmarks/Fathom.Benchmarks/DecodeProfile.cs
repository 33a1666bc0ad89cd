using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Fathom.Cpu;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Runtime;

namespace Fathom.Benchmarks;

/// <summary>
/// Where one decode step's time goes: a synthetic preset is decoded token by token through a backend that times
/// every operation it is asked for, grouped by operation and weight (layer and expert/head numbers folded together),
/// with the time spent outside the backend (copies, routing, residual adds) as its own line. Wall-clock, so run it on
/// a quiet machine; the ranking, not the last digit, is what it is for.
/// <code>dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --decode-profile [-t 2] [-n 32] [--models a,b]</code>
/// </summary>
public static partial class DecodeProfile
{
    public static int Run(string[] args)
    {
        int threads = 2, generate = 32;
        string[] models = ["deepseek-v2-lite:ud-iq1_s"];
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "-t": threads = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "-n": generate = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--models": models = Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries); break;
                default: Console.Error.WriteLine($"error: unknown argument '{args[i]}'; use -t, -n, --models"); return 2;
            }
        }
        foreach (string name in models)
        {
            if (!RealModelPresets.TryGet(name, out RealModelPreset preset))
            {
                Console.Error.WriteLine($"error: unknown preset '{name}'");
                return 2;
            }
            string path = SyntheticModelCache.GetOrCreate(preset.Blueprint());
            var timing = new TimingBackend(new CpuBackend(threads));
            using Model model = ModelLoader.Load(path, new ModelOptions { Backend = _ => timing });
            float[] logits = new float[model.VocabSize];
            var random = new Random(42);
            InferenceSession session = model.CreateSession(8 + 2 * generate);
            model.Forward(session, [.. Enumerable.Range(0, 8).Select(_ => random.Next(model.VocabSize))], logits);
            // One untimed pass over as many tokens maps the weights the timed pass reads.
            for (int i = 0; i < generate; i++) model.Forward(session, [random.Next(model.VocabSize)], logits);
            timing.Reset();
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; i < generate; i++) model.Forward(session, [random.Next(model.VocabSize)], logits);
            double total = Stopwatch.GetElapsedTime(start).TotalMilliseconds / generate;
            timing.Print(name, total, generate);
        }
        return 0;
    }

    private sealed partial class TimingBackend(IComputeBackend inner) : IComputeBackend
    {
        private readonly Dictionary<string, (long Ticks, long Calls, long Bytes)> _entries = [];

        public int Threads => inner.Threads;

        public void Reset() => _entries.Clear();

        private void Add(string key, long start, long bytes)
        {
            long ticks = Stopwatch.GetTimestamp() - start;
            _entries.TryGetValue(key, out var e);
            _entries[key] = (e.Ticks + ticks, e.Calls + 1, e.Bytes + bytes);
        }

        [GeneratedRegex(@"\d+")]
        private static partial Regex Numbers();

        public void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens)
        {
            long start = Stopwatch.GetTimestamp();
            inner.MatMul(weight, input, output, tokens);
            Add($"MatMul {Numbers().Replace(weight.Name, "#")} {weight.Format.Type} {weight.Rows}x{weight.Columns}", start, weight.Rows * weight.RowBytes);
        }

        public void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
        {
            long start = Stopwatch.GetTimestamp();
            inner.MatMulGroup(weights, inputs, inputStride, outputs, outputStride);
            long bytes = 0;
            var names = new SortedSet<string>(StringComparer.Ordinal);
            foreach (WeightMatrix w in weights)
            {
                bytes += w.Rows * w.RowBytes;
                names.Add($"{Numbers().Replace(w.Name, "#")} {w.Format.Type}");
            }
            Add($"MatMulGroup of {weights.Length}: {string.Join(", ", names)}", start, bytes);
        }

        public void TransposedMatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
            int tokens = 1, int inputTokenStride = 0, int outputTokenStride = 0)
        {
            long start = Stopwatch.GetTimestamp();
            inner.TransposedMatMulGroup(weights, inputs, inputStride, outputs, outputStride, tokens, inputTokenStride, outputTokenStride);
            long bytes = 0;
            foreach (WeightMatrix w in weights) bytes += w.Rows * w.RowBytes;
            Add($"TransposedMatMulGroup of {weights.Length}: {Numbers().Replace(weights[0].Name, "#")} {weights[0].Format.Type}", start, bytes);
        }

        public void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon)
        {
            long start = Stopwatch.GetTimestamp();
            inner.RmsNorm(input, weight, output, tokens, epsilon);
            Add("RmsNorm", start, 0);
        }

        public void Rope(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition)
        {
            long start = Stopwatch.GetTimestamp();
            inner.Rope(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition);
            Add("Rope", start, 0);
        }

        public void SiluMul(Span<float> gate, ReadOnlySpan<float> up)
        {
            long start = Stopwatch.GetTimestamp();
            inner.SiluMul(gate, up);
            Add("SiluMul", start, 0);
        }

        public void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens)
        {
            long start = Stopwatch.GetTimestamp();
            inner.Attention(queries, cache, output, shape, firstPosition, tokens);
            Add("Attention", start, 0);
        }

        public void Print(string model, double totalMs, int steps)
        {
            double tickMs = 1000.0 / Stopwatch.Frequency / steps;
            double inside = _entries.Values.Sum(e => e.Ticks) * tickMs;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{model}: {totalMs:F2} ms per token ({1000 / totalMs:F2} t/s), {Threads} threads, load average {File.ReadAllText("/proc/loadavg")[..14]}"));
            Console.WriteLine("| Operation | ms / token | share | calls / token | GB/s |");
            Console.WriteLine("|---|---:|---:|---:|---:|");
            foreach (var (key, e) in _entries.OrderByDescending(kv => kv.Value.Ticks))
            {
                double ms = e.Ticks * tickMs;
                string rate = e.Bytes > 0 ? (e.Bytes / (double)steps / (ms / 1000) / 1e9).ToString("F1", CultureInfo.InvariantCulture) : "";
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {key} | {ms:F3} | {ms / totalMs:P1} | {e.Calls / (double)steps:F0} | {rate} |"));
            }
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| outside the backend | {totalMs - inside:F3} | {(totalMs - inside) / totalMs:P1} | | |"));
        }

        public void Dispose() => inner.Dispose();
    }
}
