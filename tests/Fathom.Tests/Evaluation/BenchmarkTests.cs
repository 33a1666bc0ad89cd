using Fathom.Evaluation;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Tests.Models;
using Xunit.Abstractions;

namespace Fathom.Tests.Evaluation;

public sealed class BenchmarkTests(ITestOutputHelper output)
{
    private static readonly BenchmarkOptions Small = new() { PromptTokens = 8, GeneratedTokens = 4, Repetitions = 3 };

    private static void WithModel(string variant, Action<Model, SyntheticModelSpec> test)
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec(variant);
        string path = ModelTestKit.Synthesize(spec);
        try
        {
            using Model model = ModelLoader.Load(path, new ModelOptions { Threads = 2 });
            test(model, spec);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void AssertOrdered(ThroughputStatistics s, int samples)
    {
        Assert.Equal(samples, s.Samples.Count);
        foreach (double v in s.Samples) Assert.True(v > 0 && double.IsFinite(v), $"sample {v}");
        Assert.True(s.Min <= s.Median && s.Median <= s.Max, $"{s.Min} ≤ {s.Median} ≤ {s.Max}");
        Assert.Equal(s.Samples.Min(), s.Min);
        Assert.Equal(s.Samples.Max(), s.Max);
    }

    /// <summary>
    /// The prompt test and the generation prompt go in passes of at most <see cref="BenchmarkOptions.PromptBatchSize"/>
    /// tokens (llama-bench's ubatch), then one token per generation step; a batch size below one is refused.
    /// </summary>
    [Fact]
    public void PromptsGoInPassesOfThePromptBatchSize()
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("qwen2");
        string path = ModelTestKit.Synthesize(spec);
        try
        {
            var backend = new Generation.SelectingCpuBackend(threads: 2, vocabulary: spec.VocabSize);
            using Model model = ModelLoader.Load(path, new ModelOptions { Backend = _ => backend });
            var options = new BenchmarkOptions { PromptTokens = 11, GenerationPromptTokens = 9, GeneratedTokens = 2, Repetitions = 1, WarmUpTokens = 1, PromptBatchSize = 4 };
            Benchmark.Run(model, options);
            // Warm-up: a 1-token prompt test, the 9-token generation prompt, one step; then the timed repetition.
            Assert.Equal([1, 4, 4, 1, 1, 4, 4, 3, 4, 4, 1, 1, 1], backend.PassTokens);
            Assert.Throws<ArgumentException>(() => Benchmark.Run(model, options with { PromptBatchSize = 0 }));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void GenerationCanStartDeeperThanThePromptTest()
    {
        WithModel("qwen2", (model, _) =>
        {
            // 24 tokens of context before generating, past the 8-token prompt test: sessions are sized for 24 + 4.
            BenchmarkOptions deep = Small with { GenerationPromptTokens = 24, Repetitions = 1 };
            Assert.Equal(28, deep.TokensNeeded);
            BenchmarkResult shallow = Benchmark.Run(model, Small with { Repetitions = 1 });
            BenchmarkResult r = Benchmark.Run(model, deep);
            AssertOrdered(r.Generation, 1);
            Assert.Equal(shallow.KvCacheBytes * 28, r.KvCacheBytes * 12);
            Assert.Throws<ArgumentException>(() => Benchmark.Run(model, deep with { ContextTokens = 27 }));
        });
    }

    [Fact]
    public void DenseModelGivesOrderedPositiveRatesAndReadsEveryTensorButTheEmbeddingTable()
    {
        WithModel("qwen2", (model, spec) =>
        {
            BenchmarkResult r = Benchmark.Run(model, Small with { BandwidthGBps = 10 });
            AssertOrdered(r.PromptProcessing, 3);
            AssertOrdered(r.Generation, 3);

            GgufTensorInfo embedding = model.File.GetTensor("token_embd.weight");
            long expected = model.File.Tensors.Where(t => t.Name != "token_embd.weight").Sum(t => t.ByteSize)
                            + embedding.ByteSize / spec.VocabSize;
            Assert.Equal(expected, r.WeightBytesPerToken);
            Assert.Equal(model.File.Tensors.Sum(t => t.ByteSize), r.MappedWeightBytes);
            Assert.True(r.WeightBytesPerToken < r.MappedWeightBytes);

            Assert.Equal(expected * r.Generation.Median / 10e9, r.RooflineFraction!.Value, 12);
            Assert.True(r.KvCacheBytes > 0);
            Assert.True(r.PeakWorkingSetBytes >= r.WorkingSetBytes && r.WorkingSetBytes > 0);
            Assert.True(r.GcHeapSizeBytes > 0);
        });
    }

    [Fact]
    public void MoeModelCountsOnlyTheUsedShareOfRoutedExperts()
    {
        WithModel("deepseek2-v3", (model, spec) =>
        {
            BenchmarkResult r = Benchmark.Run(model, Small with { Repetitions = 2 });
            AssertOrdered(r.PromptProcessing, 2);
            AssertOrdered(r.Generation, 2);
            Assert.Null(r.RooflineFraction);

            long expected = 0;
            int routedTensors = 0;
            foreach (GgufTensorInfo t in model.File.Tensors)
            {
                if (t.Name == "token_embd.weight") expected += t.ByteSize / spec.VocabSize;
                else if (t.Name.EndsWith("_exps.weight"))
                {
                    routedTensors++;
                    expected += t.ByteSize * spec.ExpertsUsed / spec.Experts; // 4 of 16 experts
                }
                else expected += t.ByteSize;
            }
            Assert.Equal(3 * (spec.Layers - spec.LeadingDenseBlocks), routedTensors);
            Assert.Equal(expected, r.WeightBytesPerToken);
        });
    }

    [Fact]
    public void AnEmbeddingTableThatIsAlsoTheOutputMatrixIsReadInFull()
    {
        ModelHyperparameters dense = ModelHyperparameters.FromMetadata(
            GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(LlamaCppAgreementTests.Spec("qwen2")))).Metadata);
        static GgufFile File(bool withOutput)
        {
            var writer = new GgufWriter();
            writer.AddTensor("token_embd.weight", [8, 16], GgmlType.F32, new byte[8 * 16 * 4]);
            writer.AddTensor("output_norm.weight", [8], GgmlType.F32, new byte[8 * 4]);
            if (withOutput) writer.AddTensor("output.weight", [8, 16], GgmlType.F32, new byte[8 * 16 * 4]);
            return GgufFile.Parse(ModelTestKit.Bytes(writer));
        }
        using GgufFile tied = File(withOutput: false), untied = File(withOutput: true);
        Assert.Equal(512 + 32, Benchmark.WeightBytesPerToken(tied, dense));
        Assert.Equal(32 + 32 + 512, Benchmark.WeightBytesPerToken(untied, dense));
        Assert.Equal(512 + 32 + 512, Benchmark.MappedWeightBytes(untied));
    }

    [Fact]
    public void StatisticsTakeTheMiddleSampleOrTheMeanOfTheMiddleTwo()
    {
        ThroughputStatistics odd = ThroughputStatistics.From([30, 10, 20]);
        Assert.Equal((20.0, 10.0, 30.0), (odd.Median, odd.Min, odd.Max));
        Assert.Equal([30.0, 10, 20], odd.Samples);
        ThroughputStatistics even = ThroughputStatistics.From([4, 1, 3, 2]);
        Assert.Equal((2.5, 1.0, 4.0), (even.Median, even.Min, even.Max));
        Assert.Throws<ArgumentException>(() => ThroughputStatistics.From([]));
    }

    [Theory]
    [InlineData(0, 4, 1, null, "prompt length")]
    [InlineData(8, 0, 1, null, "generation length")]
    [InlineData(8, 4, 0, null, "repetitions")]
    [InlineData(8, 4, 1, -1.0, "bandwidth")]
    [InlineData(4000, 97, 1, null, "context of 4096")]
    [InlineData(int.MaxValue, int.MaxValue, 1, null, "context of 4096")]
    public void OptionsNoRunCanUseAreRejected(int prompt, int generated, int repetitions, double? bandwidth, string message)
    {
        var options = new BenchmarkOptions { PromptTokens = prompt, GeneratedTokens = generated, Repetitions = repetitions, BandwidthGBps = bandwidth };
        var e = Assert.Throws<ArgumentException>(() => options.Validate(contextLength: 4096));
        Assert.Contains(message, e.Message);
        new BenchmarkOptions { PromptTokens = 4000, GeneratedTokens = 96 }.Validate(4096);
    }

    /// <summary>
    /// Steady decoding allocates nothing on the managed heap of the calling thread: after warm-up steps (which
    /// size the session's scratch buffers), 20 single-token forward passes allocate 0 bytes, both early in the
    /// context and past the first 256 positions, where the attention-score buffers must have grown.
    /// </summary>
    [Theory]
    [InlineData("qwen2")]
    [InlineData("deepseek2-v3")]
    [InlineData("deepseek2-v2-lite")] // the fused attn_kv_b: MLA's transposed key products
    public void SteadyDecodingAllocatesNothing(string variant)
    {
        WithModel(variant, (model, spec) =>
        {
            var session = model.CreateSession(340);
            float[] logits = new float[model.VocabSize];
            int[] tokens = ModelTestKit.Prompt(spec.VocabSize, 340, spec.Seed);
            model.Forward(session, tokens.AsSpan(0, 4), logits);
            for (int i = 4; i < 8; i++) model.Forward(session, tokens.AsSpan(i, 1), logits);
            AssertDecodingAllocatesNothing(model, session, tokens, logits, variant);

            model.Forward(session, tokens.AsSpan(session.Position, 250 - session.Position), logits); // to position 250
            for (int i = 250; i < 260; i++) model.Forward(session, tokens.AsSpan(i, 1), logits);
            AssertDecodingAllocatesNothing(model, session, tokens, logits, variant);
        });
    }

    /// <summary>
    /// Rounds of 20 decode steps from the session's position: a per-step allocation shows in every round, the runtime's
    /// own first-time work (the JIT moving a method to its next tier under a loaded test run) in one at most, so the
    /// fewest bytes of up to three rounds must be zero.
    /// </summary>
    private void AssertDecodingAllocatesNothing(Model model, Fathom.Runtime.InferenceSession session, int[] tokens, float[] logits, string variant)
    {
        long fewest = long.MaxValue;
        for (int round = 0; round < 3 && fewest > 0; round++)
        {
            int first = session.Position;
            long before = GC.GetAllocatedBytesForCurrentThread();
            long beforeAllThreads = GC.GetTotalAllocatedBytes(precise: true);
            for (int i = first; i < first + 20; i++) model.Forward(session, tokens.AsSpan(i, 1), logits);
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            // Other threads (the test host's own, tests running in parallel) show up here: reported, not asserted.
            output.WriteLine($"{variant}, positions {first}..{first + 19}: calling thread {allocated} B, whole process {GC.GetTotalAllocatedBytes(precise: true) - beforeAllThreads} B");
            fewest = Math.Min(fewest, allocated);
        }
        Assert.True(fewest == 0, $"{variant}: every round of 20 decode steps allocated on the calling thread (the fewest: {fewest} bytes)");
    }
}
