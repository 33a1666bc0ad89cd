using Fathom.Evaluation;
using Fathom.Generation;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Tests.Models;
using Xunit.Abstractions;

namespace Fathom.Tests.Evaluation;

/// <summary>
/// Perplexity as llama-perplexity computes it, checked against an independent loop over Fathom's full-chunk logits
/// and over llama.cpp's logits for the same chunks; KL divergence against saved base log-probabilities.
/// </summary>
public sealed class PerplexityTests(ITestOutputHelper output, PerplexityTests.SynthesizedModels models) : IClassFixture<PerplexityTests.SynthesizedModels>
{
    private const int Context = 32;
    private const int ChunkCount = 3;

    /// <summary>One F32 model and its Q8_0 copy (same weights' spec), synthesized once for the class.</summary>
    public sealed class SynthesizedModels : IDisposable
    {
        public SyntheticModelSpec Spec { get; } = LlamaCppAgreementTests.Spec("qwen2");
        public string F32 { get; }
        public string Q8 { get; }
        public int Bos { get; }

        public SynthesizedModels()
        {
            F32 = ModelTestKit.Synthesize(Spec);
            Q8 = ModelTestKit.Synthesize(Spec with { DefaultType = GgmlType.Q8_0 });
            using LoadedModel loaded = LoadedModel.Open(F32);
            Bos = loaded.Tokenizer.BosId!.Value;
        }

        public void Dispose()
        {
            File.Delete(F32);
            File.Delete(Q8);
        }
    }

    private readonly SynthesizedModels _models = models;

    // A partial chunk at the end is ignored, as llama-perplexity does.
    private int[] Text(int seed = 5) => ModelTestKit.Prompt(_models.Spec.VocabSize, ChunkCount * Context + 11, seed);

    private static PerplexityOptions Options(string? save = null, string? klBase = null) =>
        new() { ContextSize = Context, BatchSize = 5, SaveLogProbabilitiesPath = save, KlDivergenceBasePath = klBase };

    /// <summary>The formula written out plainly: NLL of tokens first+1..C−1 of each BOS-led chunk, in double.</summary>
    private static (double Ppl, double Error) Direct(IReadOnlyList<float[]> chunkLogits, int[] text, int vocab)
    {
        double sum = 0, squares = 0;
        int n = 0;
        for (int c = 0; c < chunkLogits.Count; c++)
            for (int p = Context / 2; p < Context - 1; p++)
            {
                double max = double.NegativeInfinity;
                for (int v = 0; v < vocab; v++) max = Math.Max(max, chunkLogits[c][p * vocab + v]);
                double exp = 0;
                for (int v = 0; v < vocab; v++) exp += Math.Exp(chunkLogits[c][p * vocab + v] - max);
                double nll = max + Math.Log(exp) - chunkLogits[c][p * vocab + text[c * Context + p + 1]];
                sum += nll;
                squares += nll * nll;
                n++;
            }
        double mean = sum / n, ppl = Math.Exp(mean);
        return (ppl, ppl * Math.Sqrt((squares / n - mean * mean) / (n - 1)));
    }

    private int[] ChunkWithBos(int[] text, int c)
    {
        int[] chunk = text[(c * Context)..((c + 1) * Context)];
        chunk[0] = _models.Bos;
        return chunk;
    }

    [Fact]
    public void PerplexityEqualsADirectComputationFromFullChunkLogits()
    {
        int[] text = Text();
        int vocab = _models.Spec.VocabSize;
        var chunkLogits = new List<float[]>();
        PerplexityResult result;
        var progress = new List<PerplexityProgress>();
        using (Model model = ModelLoader.Load(_models.F32, new ModelOptions { Threads = 2 }))
        {
            for (int c = 0; c < ChunkCount; c++)
                chunkLogits.Add(model.Forward(model.CreateSession(Context), ChunkWithBos(text, c), allPositions: true));
            result = Perplexity.Evaluate(model, text, _models.Bos, Options(), progress.Add);
        }
        (double ppl, double error) = Direct(chunkLogits, text, vocab);
        output.WriteLine($"PPL {result.Perplexity:F6} ± {result.PerplexityError:F6}; direct {ppl:F6} ± {error:F6}");
        Assert.Equal(ChunkCount, result.ChunkCount);
        Assert.Equal(ChunkCount * (Context - 1 - Context / 2), result.ScoredTokens);
        Assert.True(Math.Abs(result.Perplexity / ppl - 1) < 1e-6, $"{result.Perplexity} vs {ppl}");
        Assert.True(Math.Abs(result.PerplexityError / error - 1) < 1e-4, $"{result.PerplexityError} vs {error}");
        Assert.Equal(ChunkCount, progress.Count);
        Assert.Equal(result.Perplexity, result.ChunkPerplexities[^1]);
        Assert.Equal(result.ChunkPerplexities, progress.Select(p => p.RunningPerplexity));
        // The one-chunk running estimate is the first chunk's own perplexity.
        Assert.True(Math.Abs(result.ChunkPerplexities[0] / Direct(chunkLogits.Take(1).ToList(), text, vocab).Ppl - 1) < 1e-6);
        // Random weights on random tokens: sharp, wrong predictions, so well above 1 (nothing degenerate).
        Assert.True(double.IsFinite(result.Perplexity) && result.Perplexity > 2, $"PPL {result.Perplexity}");
    }

    [Fact]
    public void PerplexityEqualsTheSameFormulaOverLlamaCppLogits()
    {
        int[] text = Text();
        int vocab = _models.Spec.VocabSize;
        var chunkLogits = new List<float[]>();
        for (int c = 0; c < ChunkCount; c++)
            chunkLogits.Add([.. LlamaCppReference.Logits(_models.F32, ChunkWithBos(text, c)).SelectMany(row => row)]);
        (double llamaPpl, _) = Direct(chunkLogits, text, vocab);

        PerplexityResult result;
        using (Model model = ModelLoader.Load(_models.F32, new ModelOptions { Threads = 2 }))
            result = Perplexity.Evaluate(model, text, _models.Bos, Options());
        output.WriteLine($"Fathom PPL {result.Perplexity:F6}, llama.cpp logits {llamaPpl:F6}");
        Assert.True(Math.Abs(result.Perplexity / llamaPpl - 1) < 1e-3, $"{result.Perplexity} vs llama.cpp {llamaPpl}");
    }

    [Fact]
    public void KlDivergenceOfAModelAgainstItsOwnSavedRunIsZero()
    {
        string saved = Path.GetTempFileName();
        try
        {
            int[] text = Text();
            using Model model = ModelLoader.Load(_models.F32, new ModelOptions { Threads = 2 });
            PerplexityResult first = Perplexity.Evaluate(model, text, _models.Bos, Options(save: saved));
            int scored = ChunkCount * LogProbabilityFile.ScoredPerChunk(Context);
            Assert.Equal(LogProbabilityFile.HeaderSize + 4L * ChunkCount * Context + 4L * scored * model.VocabSize, new FileInfo(saved).Length);

            PerplexityResult second = Perplexity.Evaluate(model, text, _models.Bos, Options(klBase: saved));
            KlDivergenceSummary kl = second.KlDivergence!;
            Assert.Equal(scored, kl.Tokens);
            Assert.True(kl.Mean < 1e-9 && kl.Maximum < 1e-8, $"KL {kl.Mean} (max {kl.Maximum})");
            Assert.Equal(100, kl.SameTopPercent);
            Assert.True(Math.Abs(kl.BasePerplexity / first.Perplexity - 1) < 1e-5, $"{kl.BasePerplexity} vs {first.Perplexity}");
            Assert.True(Math.Abs(kl.MeanDeltaProbabilityPercent) < 1e-4);
        }
        finally
        {
            File.Delete(saved);
        }
    }

    [Fact]
    public void KlDivergenceOfAQ8CopyIsSmallButPositiveAndMatchesADirectComputation()
    {
        string saved = Path.GetTempFileName();
        try
        {
            int[] text = Text();
            int vocab = _models.Spec.VocabSize;
            var baseLogits = new List<float[]>();
            var q8Logits = new List<float[]>();
            PerplexityResult result;
            using (Model f32 = ModelLoader.Load(_models.F32, new ModelOptions { Threads = 2 }))
            {
                Perplexity.Evaluate(f32, text, _models.Bos, Options(save: saved));
                for (int c = 0; c < ChunkCount; c++) baseLogits.Add(f32.Forward(f32.CreateSession(Context), ChunkWithBos(text, c), allPositions: true));
            }
            using (Model q8 = ModelLoader.Load(_models.Q8, new ModelOptions { Threads = 2 }))
            {
                result = Perplexity.Evaluate(q8, text, _models.Bos, Options(klBase: saved));
                for (int c = 0; c < ChunkCount; c++) q8Logits.Add(q8.Forward(q8.CreateSession(Context), ChunkWithBos(text, c), allPositions: true));
            }

            // KL(base ‖ q8) per position, written out in double from both models' full-chunk logits.
            var values = new List<double>();
            int agree = 0;
            for (int c = 0; c < ChunkCount; c++)
                for (int p = Context / 2; p < Context - 1; p++)
                {
                    ReadOnlySpan<float> b = baseLogits[c].AsSpan(p * vocab, vocab), q = q8Logits[c].AsSpan(p * vocab, vocab);
                    double lb = LogSumExpDouble(b), lq = LogSumExpDouble(q), kl = 0;
                    for (int v = 0; v < vocab; v++) kl += Math.Exp(b[v] - lb) * ((b[v] - lb) - (q[v] - lq));
                    values.Add(kl);
                    if (ModelTestKit.ArgMax(b) == ModelTestKit.ArgMax(q)) agree++;
                }
            KlDivergenceSummary summary = result.KlDivergence!;
            output.WriteLine($"Q8_0 vs F32: mean KL {summary.Mean:E3} ± {summary.MeanError:E2}, max {summary.Maximum:E3}, median {summary.Median:E3}, same top {summary.SameTopPercent:F1}%");
            Assert.True(summary.Mean > 0 && summary.Mean < 0.05, $"mean KL {summary.Mean}");
            Assert.True(Math.Abs(summary.Mean / values.Average() - 1) < 1e-3, $"{summary.Mean} vs direct {values.Average()}");
            Assert.True(Math.Abs(summary.Maximum / values.Max() - 1) < 1e-3, $"{summary.Maximum} vs direct {values.Max()}");
            Assert.Equal(100.0 * agree / values.Count, summary.SameTopPercent, 9);
            Assert.InRange(summary.SameTopPercent, 80, 100);
            Assert.True(summary.Minimum <= summary.Median && summary.Median <= summary.Percentile99 && summary.Percentile99 <= summary.Maximum);
        }
        finally
        {
            File.Delete(saved);
        }
    }

    private static double LogSumExpDouble(ReadOnlySpan<float> row)
    {
        double max = double.NegativeInfinity, sum = 0;
        foreach (float v in row) max = Math.Max(max, v);
        foreach (float v in row) sum += Math.Exp(v - max);
        return max + Math.Log(sum);
    }

    [Fact]
    public void BadInputsAreRefusedWithClearErrors()
    {
        using Model model = ModelLoader.Load(_models.F32, new ModelOptions { Threads = 2 });
        int[] text = Text();
        var tooShort = Assert.Throws<ArgumentException>(() => Perplexity.Evaluate(model, text[..(2 * Context - 1)], _models.Bos, Options()));
        Assert.Contains("needs at least 64", tooShort.Message);
        Assert.Throws<ArgumentException>(() => Perplexity.Evaluate(model, text, _models.Bos, Options() with { ContextSize = 8192 }));
        Assert.Throws<ArgumentException>(() => Perplexity.Evaluate(model, text, _models.Bos, Options() with { MaxChunks = 0 }));

        string saved = Path.GetTempFileName();
        try
        {
            Perplexity.Evaluate(model, text, _models.Bos, Options(save: saved) with { MaxChunks = 2 });
            // More chunks than the base holds, another text, another context.
            Assert.Contains("fewer", Assert.Throws<InvalidDataException>(() => Perplexity.Evaluate(model, text, _models.Bos, Options(klBase: saved))).Message);
            Assert.Contains("different tokens", Assert.Throws<InvalidDataException>(() =>
                Perplexity.Evaluate(model, Text(seed: 6), _models.Bos, Options(klBase: saved) with { MaxChunks = 2 })).Message);
            Assert.Throws<InvalidDataException>(() => Perplexity.Evaluate(model, text, _models.Bos, Options(klBase: saved) with { ContextSize = 16 }));

            // A well-formed file from a model of another vocabulary.
            using (LogProbabilityFile.Writer writer = LogProbabilityFile.Create(saved, 10, Context, text.AsSpan(0, 2 * Context)))
                for (int row = 0; row < 2 * LogProbabilityFile.ScoredPerChunk(Context); row++) writer.WriteRow(new float[10]);
            Assert.Contains("vocabulary of 10", Assert.Throws<InvalidDataException>(() =>
                Perplexity.Evaluate(model, text, _models.Bos, Options(klBase: saved) with { MaxChunks = 2 })).Message);
            Perplexity.Evaluate(model, text, _models.Bos, Options(save: saved) with { MaxChunks = 2 });

            // A header whose vocabulary does not match the file's size; a truncated file; a chunk count past any size.
            byte[] bytes = File.ReadAllBytes(saved);
            BitConverter.TryWriteBytes(bytes.AsSpan(12), 999);
            File.WriteAllBytes(saved, bytes);
            Assert.Throws<InvalidDataException>(() => LogProbabilityFile.Open(saved));
            BitConverter.TryWriteBytes(bytes.AsSpan(12), model.VocabSize);
            File.WriteAllBytes(saved, bytes[..^4]);
            Assert.Contains("bytes", Assert.Throws<InvalidDataException>(() => LogProbabilityFile.Open(saved)).Message);
            BitConverter.TryWriteBytes(bytes.AsSpan(20), uint.MaxValue);
            File.WriteAllBytes(saved, bytes);
            Assert.Throws<InvalidDataException>(() => LogProbabilityFile.Open(saved));
            File.WriteAllBytes(saved, "not a log-probability file at all"u8.ToArray());
            Assert.Contains("FTHMLOGP", Assert.Throws<InvalidDataException>(() => LogProbabilityFile.Open(saved)).Message);
        }
        finally
        {
            File.Delete(saved);
        }
    }

    [Fact]
    public void PercentilesInterpolateBetweenSortedValues()
    {
        float[] sorted = [0, 1, 2, 3, 4];
        Assert.Equal(2, KlDivergenceStatistics.Percentile(sorted, 0.5), 12);
        Assert.Equal(3.96, KlDivergenceStatistics.Percentile(sorted, 0.99), 6);
        Assert.Equal(0, KlDivergenceStatistics.Percentile(sorted, 0), 12);
        Assert.Equal(4, KlDivergenceStatistics.Percentile(sorted, 1), 12);
    }
}
