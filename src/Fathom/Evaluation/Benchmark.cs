using System.Diagnostics;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Runtime;
using Fathom.Runtime.Sampling;

namespace Fathom.Evaluation;

/// <summary>
/// CPU speed of a model, measured the way llama-bench does: prompt processing (pp) feeds P random in-vocabulary
/// tokens in one forward pass from an empty session (one session, reset before each test, as llama-bench clears its
/// context's cache); generation (tg) feeds a short prompt, then times N forward passes of one token each, each followed
/// by a greedy token choice as generation makes it (<see cref="Model.ForwardSelect"/>: on a GPU the arg-max is taken
/// there and only the token comes back). Each test runs once untimed (JIT, page faults on the mapped weights, caches; with
/// <see cref="BenchmarkOptions.WarmUpTokens"/>, a shorter run), then
/// <see cref="BenchmarkOptions.Repetitions"/> timed times; the session has room for P + N tokens.
/// </summary>
public static class Benchmark
{
    public static BenchmarkResult Run(Model model, BenchmarkOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        options.Validate(model.Config.ContextLength);
        int context = options.ContextTokens ?? (int)options.TokensNeeded;
        var random = new Random(options.Seed);
        int[] prompt = RandomTokens(random, model.VocabSize, options.PromptTokens);
        int[] generationPrompt = RandomTokens(random, model.VocabSize, options.GenerationPromptTokens);
        int[] generated = RandomTokens(random, model.VocabSize, options.GeneratedTokens);
        float[] logits = GC.AllocateUninitializedArray<float>(model.VocabSize);
        var chosen = new TokenCandidates(1);

        var pp = new List<double>(options.Repetitions);
        var tg = new List<double>(options.Repetitions);
        // One session, made (its cache and scratch allocated and attached) once and reset before each test, as
        // llama-bench clears one context's cache: a repetition times forward passes, not the buffers' allocation.
        InferenceSession session = model.CreateSession(context);
        long kvCacheBytes = session.Cache.Bytes;
        for (int repetition = 0; repetition <= options.Repetitions; repetition++)
        {
            bool warmUp = repetition == 0;
            int promptTokens = warmUp ? Math.Min(options.WarmUpTokens ?? options.PromptTokens, options.PromptTokens) : options.PromptTokens;
            int generatedTokens = warmUp ? Math.Min(options.WarmUpTokens ?? options.GeneratedTokens, options.GeneratedTokens) : options.GeneratedTokens;
            session.Reset();
            long start = Stopwatch.GetTimestamp();
            model.Forward(session, model.ForwardLeadingPasses(session, prompt.AsSpan(0, promptTokens), options.PromptBatchSize, logits), logits);
            TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
            if (!warmUp) pp.Add(TokensPerSecond(options.PromptTokens, elapsed));

            session.Reset();
            model.Forward(session, model.ForwardLeadingPasses(session, generationPrompt, options.PromptBatchSize, logits), logits);
            start = Stopwatch.GetTimestamp();
            for (int i = 0; i < generatedTokens; i++) model.ForwardSelect(session, generated.AsSpan(i, 1), GreedyRequest, chosen);
            elapsed = Stopwatch.GetElapsedTime(start);
            if (!warmUp) tg.Add(TokensPerSecond(options.GeneratedTokens, elapsed));
        }

        ThroughputStatistics generation = ThroughputStatistics.From(tg);
        long bytesPerToken = WeightBytesPerToken(model.File, model.Config);
        long workingSet = Environment.WorkingSet;
        using Process process = Process.GetCurrentProcess();
        return new BenchmarkResult
        {
            Options = options,
            PromptProcessing = ThroughputStatistics.From(pp),
            Generation = generation,
            WeightBytesPerToken = bytesPerToken,
            MappedWeightBytes = MappedWeightBytes(model.File),
            KvCacheBytes = kvCacheBytes,
            // Linux batches RSS counters per thread, so the kernel's high-water mark can trail a resident size read just
            // before it by a few pages: the peak is at least the current working set by definition.
            PeakWorkingSetBytes = Math.Max(process.PeakWorkingSet64, workingSet),
            WorkingSetBytes = workingSet,
            GcHeapSizeBytes = GC.GetGCMemoryInfo().HeapSizeBytes,
            RooflineFraction = options.BandwidthGBps is double gbps ? RooflineFraction(bytesPerToken, generation.Median, gbps) : null,
        };
    }

    private static TokenSelectionRequest GreedyRequest => new(Greedy: true, Candidates: 1, CutoffGap: 0, LogitPenalties.None, [], []);

    /// <summary>
    /// An estimate of the weight bytes one decoded token reads, the sum of <see cref="TokenWeightBytes.Of"/> over the
    /// file's tensors. It ignores the KV cache and activations, and assumes a token's experts are distinct within a
    /// layer, as top-k makes them.
    /// </summary>
    public static long WeightBytesPerToken(GgufFile file, ModelHyperparameters config)
    {
        bool tiedOutput = !file.TryGetTensor("output.weight", out _);
        int experts = config.Moe?.ExpertCount ?? 0, used = config.Moe?.ExpertUsedCount ?? 0;
        long total = 0;
        foreach (GgufTensorInfo tensor in file.Tensors)
            total = checked(total + TokenWeightBytes.Of(tensor.Name, tensor.ByteSize, tensor.RowBytes, tiedOutput, experts, used));
        return total;
    }

    /// <summary>Bytes of every tensor in the file.</summary>
    public static long MappedWeightBytes(GgufFile file)
    {
        long total = 0;
        foreach (GgufTensorInfo tensor in file.Tensors) total = checked(total + tensor.ByteSize);
        return total;
    }

    /// <summary>Bytes per token × tokens per second ÷ bandwidth (GB/s = 10⁹ bytes/s).</summary>
    public static double RooflineFraction(long bytesPerToken, double tokensPerSecond, double bandwidthGBps) =>
        bytesPerToken * tokensPerSecond / (bandwidthGBps * 1e9);

    private static double TokensPerSecond(int tokens, TimeSpan elapsed) =>
        tokens / Math.Max(elapsed.TotalSeconds, 1e-9);

    private static int[] RandomTokens(Random random, int vocab, int count)
    {
        int[] tokens = new int[count];
        for (int i = 0; i < count; i++) tokens[i] = random.Next(vocab);
        return tokens;
    }
}
