using System.Diagnostics;
using System.Globalization;
using Fathom.Evaluation;
using Fathom.Models;
using Fathom.Models.Synthesis;
using LLama.Native;

namespace Fathom.Benchmarks;

/// <summary>
/// Fathom against llama.cpp (LLamaSharp 0.30.0's CPU backend) on the same synthetic GGUF, with the same thread count,
/// in one run: pp (a P-token prompt decoded as one batch from an empty cache) and tg (N single-token decodes after an
/// 8-token prompt), the median of R timed repetitions after one short warm-up (<c>--warmup</c> tokens, 16 by default:
/// enough to map the weights and run the JIT), and the ratio Fathom / llama.cpp. Both keep a KV cache of
/// <c>--ctx</c> tokens. Also the
/// generation roofline fraction of each: weight bytes read per token × tokens/s ÷ the measured read bandwidth.
/// The engines run one after the other, each loaded only while it runs, so their memory does not add up.
/// llama.cpp runs with its defaults as a user gets them (mmap, weight repacking, F16 KV cache, flash attention auto)
/// and a context of <c>--ctx</c> tokens with n_batch = n_ubatch = P.
/// Not a BenchmarkDotNet class: each measurement is seconds long and both engines must see the same machine state.
/// <code>dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --sidebyside [-t 2] [-r 3] [-p 512] [-n 128] [--ctx 1024] [--warmup 16] [--models a,b,c]</code>
/// </summary>
public static class LlamaCppSideBySide
{
    /// <summary>The three shapes of the CPU-speed issue: R1-Distill-Qwen-1.5B Q4_K_M, V2-Lite in an Unsloth-style 1.58-bit mix and in Q4_K_M.</summary>
    public static readonly string[] DefaultModels = ["r1-distill-qwen-1.5b:q4_k_m", "deepseek-v2-lite:ud-iq1_s", "deepseek-v2-lite:q4_k_m"];

    private const int GenerationPromptTokens = 8;

    private sealed record Settings(int Threads, int Repetitions, int PromptTokens, int GeneratedTokens, int Context, int WarmUpTokens, string[] Models);

    private sealed record Speeds(double PromptTokensPerSecond, double GenerationTokensPerSecond);

    public static int Run(string[] args)
    {
        Settings settings;
        try
        {
            settings = Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
        foreach (string name in settings.Models)
        {
            if (!RealModelPresets.TryGet(name, out _))
            {
                Console.Error.WriteLine($"error: unknown preset '{name}'; presets: {string.Join(", ", RealModelPresets.All.Select(p => p.Name))}");
                return 2;
            }
        }

        // Only llama.cpp's errors: its load log runs to thousands of lines per model.
        NativeLibraryConfig.All.WithLogCallback((level, message) => { if (level == LLamaLogLevel.Error) Console.Error.Write(message); });
        Console.WriteLine($"Fathom vs llama.cpp (LLamaSharp 0.30.0 CPU backend), {settings.Threads} thread(s), pp{settings.PromptTokens} / tg{settings.GeneratedTokens}, " +
                          $"median of {settings.Repetitions} after a {settings.WarmUpTokens}-token warm-up, context {settings.Context}");
        Console.WriteLine($"Machine: {Environment.ProcessorCount} logical CPUs, {ByteSizes.Format(SystemMemory.TotalBytes())} memory, {CpuName()}; {Environment.Version} runtime");
        Console.WriteLine($"Load average at start: {LoadAverage()}");
        double bandwidth = MemoryBandwidth.Measure(settings.Threads);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Measured read bandwidth ({settings.Threads} threads): {bandwidth:F1} GB/s"));

        var rows = new List<string>();
        foreach (string name in settings.Models)
        {
            RealModelPresets.TryGet(name, out RealModelPreset preset);
            ModelBlueprint blueprint = preset.Blueprint();
            long start = Stopwatch.GetTimestamp();
            bool cached = SyntheticModelCache.Contains(blueprint);
            string path = SyntheticModelCache.GetOrCreate(blueprint);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{name}: {ByteSizes.Format(blueprint.ByteSize)}, {(cached ? "cached" : $"synthesized in {Stopwatch.GetElapsedTime(start).TotalSeconds:F0} s")}: {path}"));

            long bytesPerToken = blueprint.Tensors.Sum(blueprint.BytesPerToken);
            Speeds fathom = MeasureFathom(path, settings);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  Fathom:    pp {fathom.PromptTokensPerSecond,9:F2} t/s   tg {fathom.GenerationTokensPerSecond,7:F2} t/s"));
            Speeds llama = MeasureLlamaCpp(path, settings);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  llama.cpp: pp {llama.PromptTokensPerSecond,9:F2} t/s   tg {llama.GenerationTokensPerSecond,7:F2} t/s"));
            rows.Add(string.Create(CultureInfo.InvariantCulture,
                $"| {name} | {ByteSizes.Format(blueprint.ByteSize)} | {fathom.PromptTokensPerSecond:F2} | {llama.PromptTokensPerSecond:F2} | " +
                $"**{fathom.PromptTokensPerSecond / llama.PromptTokensPerSecond:F2}** | {fathom.GenerationTokensPerSecond:F2} | {llama.GenerationTokensPerSecond:F2} | " +
                $"**{fathom.GenerationTokensPerSecond / llama.GenerationTokensPerSecond:F2}** | " +
                $"{Benchmark.RooflineFraction(bytesPerToken, fathom.GenerationTokensPerSecond, bandwidth):P0} / {Benchmark.RooflineFraction(bytesPerToken, llama.GenerationTokensPerSecond, bandwidth):P0} | " +
                $"{ByteSizes.Format(bytesPerToken)} |"));
        }

        Console.WriteLine($"Load average at end: {LoadAverage()}");
        Console.WriteLine();
        Console.WriteLine($"| Model | Size | Fathom pp{settings.PromptTokens} t/s | llama.cpp pp t/s | pp ratio | Fathom tg{settings.GeneratedTokens} t/s | llama.cpp tg t/s | tg ratio | tg roofline Fathom / llama.cpp | Weight bytes / token |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (string row in rows) Console.WriteLine(row);
        return 0;
    }

    private static Speeds MeasureFathom(string path, Settings s)
    {
        using Model model = ModelLoader.Load(path, new ModelOptions { Threads = s.Threads });
        BenchmarkResult result = Benchmark.Run(model, new BenchmarkOptions
        {
            PromptTokens = s.PromptTokens, GeneratedTokens = s.GeneratedTokens, Repetitions = s.Repetitions, GenerationPromptTokens = GenerationPromptTokens,
            ContextTokens = s.Context, WarmUpTokens = s.WarmUpTokens,
        });
        return new Speeds(result.PromptProcessing.Median, result.Generation.Median);
    }

    private static Speeds MeasureLlamaCpp(string path, Settings s)
    {
        NativeApi.llama_empty_call(); // LLamaSharp picks and loads the native build for this CPU on first use
        LLamaModelParams modelParams = LLamaModelParams.Default();
        modelParams.n_gpu_layers = 0;
        using SafeLlamaModelHandle model = SafeLlamaModelHandle.LoadFromFile(path, modelParams);
        LLamaContextParams contextParams = LLamaContextParams.Default();
        contextParams.n_ctx = (uint)s.Context;
        contextParams.n_batch = (uint)s.PromptTokens;
        contextParams.n_ubatch = (uint)s.PromptTokens;
        contextParams.n_threads = s.Threads;
        contextParams.n_threads_batch = s.Threads;
        using SafeLLamaContextHandle context = SafeLLamaContextHandle.Create(model, contextParams);

        int vocab = model.Vocab.Count;
        var random = new Random(42);
        int[] prompt = [.. Enumerable.Range(0, s.PromptTokens).Select(_ => random.Next(vocab))];
        int[] generationPrompt = [.. Enumerable.Range(0, GenerationPromptTokens).Select(_ => random.Next(vocab))];
        int[] generated = [.. Enumerable.Range(0, s.GeneratedTokens).Select(_ => random.Next(vocab))];
        var batch = new LLamaBatch();
        var pp = new List<double>();
        var tg = new List<double>();
        for (int repetition = 0; repetition <= s.Repetitions; repetition++)
        {
            // As Fathom's Benchmark.Run: the warm-up runs each test with at most WarmUpTokens tokens.
            bool warmUp = repetition == 0;
            context.MemoryClear(true);
            Fill(batch, warmUp ? prompt.AsSpan(0, Math.Min(s.WarmUpTokens, prompt.Length)) : prompt, 0);
            long start = Stopwatch.GetTimestamp();
            Decode(context, batch);
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (repetition > 0) pp.Add(s.PromptTokens / seconds);

            context.MemoryClear(true);
            Fill(batch, generationPrompt, 0);
            Decode(context, batch);
            start = Stopwatch.GetTimestamp();
            for (int i = 0; i < (warmUp ? Math.Min(s.WarmUpTokens, generated.Length) : generated.Length); i++)
            {
                Fill(batch, generated.AsSpan(i, 1), GenerationPromptTokens + i);
                Decode(context, batch);
            }
            seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (repetition > 0) tg.Add(s.GeneratedTokens / seconds);
        }
        return new Speeds(ThroughputStatistics.From(pp).Median, ThroughputStatistics.From(tg).Median);
    }

    /// <summary>Puts <paramref name="tokens"/> at positions from <paramref name="position"/> into the batch, with logits for the last only (as Fathom computes them).</summary>
    private static void Fill(LLamaBatch batch, ReadOnlySpan<int> tokens, int position)
    {
        batch.Clear();
        for (int i = 0; i < tokens.Length; i++) batch.Add((LLamaToken)tokens[i], position + i, LLamaSeqId.Zero, i == tokens.Length - 1);
    }

    private static void Decode(SafeLLamaContextHandle context, LLamaBatch batch)
    {
        DecodeResult result = context.Decode(batch);
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {result}");
    }

    private static Settings Parse(string[] args)
    {
        int threads = 2, repetitions = 3, prompt = 512, generate = 128, context = 1024, warmUp = 16;
        string[] models = DefaultModels;
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            int Count() => int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0 ? n : throw new ArgumentException($"{args[i - 1]} takes a positive whole number");
            switch (args[i])
            {
                case "-t" or "--threads": threads = Count(); break;
                case "-r" or "--repetitions": repetitions = Count(); break;
                case "-p" or "--n-prompt": prompt = Count(); break;
                case "-n" or "--n-gen": generate = Count(); break;
                case "--ctx": context = Count(); break;
                case "--warmup": warmUp = Count(); break;
                case "--models": models = Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries); break;
                default: throw new ArgumentException($"unknown argument '{args[i]}'; use -t, -r, -p, -n, --ctx, --warmup, --models");
            }
        }
        if (context < prompt + generate) throw new ArgumentException($"--ctx {context} is less than {prompt} + {generate} tokens");
        return new Settings(threads, repetitions, prompt, generate, context, warmUp, models);
    }

    private static string LoadAverage()
    {
        try
        {
            return File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    private static string CpuName()
    {
        try
        {
            string? line = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal)) : null;
            return line is null ? "unknown CPU" : line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException)
        {
            return "unknown CPU";
        }
    }
}
