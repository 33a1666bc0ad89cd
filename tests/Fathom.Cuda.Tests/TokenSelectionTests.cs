using Fathom.Generation;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime.Sampling;
using Fathom.Tests.Shared;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Token selection on the GPU (Kernels/sampling.cu) against the host's (<see cref="HostTokenSelection"/>, itself
/// tested against the sampler in Fathom.Tests): the same penalized logits, arg-max and candidates, bit for bit, over
/// rows with ties, ±0, NaN and infinities (NaN compares equal to NaN: the GPU does not keep a NaN's payload), up to Qwen's 152k vocabulary; and generation with sampling on the GPU
/// giving the tokens of the host sampler over copied logits.
/// </summary>
public sealed class TokenSelectionTests(GpuFixture gpu)
{
    private static readonly int[] PenaltyTokens = [0, 5, 17, 99, 1000, 151_000, 200_000];
    private static readonly int[] PenaltyCounts = [1, 2, 3, 1, 4, 2, 1];

    public static TheoryData<int, int, int, bool> Rows()
    {
        var data = new TheoryData<int, int, int, bool>();
        foreach (int vocab in new[] { 1, 17, 3000, 129_280, 152_064 })
            foreach (int kind in new[] { 0, 1, 2, 3, 4 })
                if (vocab > 1 || kind == 0)
                    data.Add(vocab, kind, vocab * 7 + kind, kind % 2 == 0);
        return data;
    }

    [Theory]
    [MemberData(nameof(Rows))]
    public void ArgMaxAndPenaltiesEqualTheHosts(int vocab, int kind, int seed, bool penalize)
    {
        gpu.Require();
        float[] logits = TestLogits.Row(vocab, kind, new Random(seed));
        TokenSelectionRequest request = Request(greedy: true, 1, penalize);
        float[] host = (float[])logits.Clone(), device = (float[])logits.Clone();
        var expected = new TokenCandidates(1);
        var actual = new TokenCandidates(1);
        HostTokenSelection.Select(host, request, expected);
        gpu.Backend.SelectTokens(device, request, actual);
        Assert.True(actual.Greedy);
        Assert.Equal(expected.ArgMax, actual.ArgMax);
        AssertSameBits(host, device);
    }

    /// <summary>
    /// Rows longer than the arg-max's blocks cover at one logit per thread, up to rows that need the most blocks and
    /// more: ties on a coarse grid (the first index wins across blocks), peaks, and the largest value at the very end.
    /// </summary>
    [Theory]
    [InlineData(1025, 2, 3)]
    [InlineData(262_145, 2, 4)]
    [InlineData(1_100_000, 2, 5)]
    [InlineData(1_100_000, 1, 6)]
    [InlineData(1_100_000, -1, 7)]
    public void ArgMaxOverManyBlocksEqualsTheHosts(int vocab, int kind, int seed)
    {
        gpu.Require();
        float[] logits = TestLogits.Row(vocab, Math.Max(kind, 0), new Random(seed));
        if (kind < 0) logits[^1] = 100f;
        float[] device = (float[])logits.Clone();
        var expected = new TokenCandidates(1);
        var actual = new TokenCandidates(1);
        TokenSelectionRequest request = Request(greedy: true, 1, penalize: false);
        HostTokenSelection.Select(logits, request, expected);
        gpu.Backend.SelectTokens(device, request, actual);
        Assert.Equal(expected.ArgMax, actual.ArgMax);
    }

    [Theory]
    [MemberData(nameof(Rows))]
    public void CandidatesEqualTheHosts(int vocab, int kind, int seed, bool penalize)
    {
        gpu.Require();
        foreach (int wanted in new[] { 1, 40, 256, 1024 })
        {
            float[] logits = TestLogits.Row(vocab, kind, new Random(seed + wanted));
            TokenSelectionRequest request = Request(greedy: false, wanted, penalize);
            float[] host = (float[])logits.Clone(), device = (float[])logits.Clone();
            var expected = new TokenCandidates();
            var actual = new TokenCandidates();
            HostTokenSelection.Select(host, request, expected);
            gpu.Backend.SelectTokens(device, request, actual);
            AssertSameBits(host, device);
            Assert.Equal(expected.NonFinite, actual.NonFinite);
            if (expected.NonFinite) continue;
            Assert.Equal(expected.Count, actual.Count);
            Assert.Equal(expected.WithinCutoff, actual.WithinCutoff);
            Assert.Equal(expected.Best, actual.Best);
            Assert.Equal(expected.Ids.AsSpan(0, expected.Count).ToArray(), actual.Ids.AsSpan(0, actual.Count).ToArray());
            AssertSameBits(expected.Values.AsSpan(0, expected.Count), actual.Values.AsSpan(0, actual.Count));
            // Within the slack the sampler's top-p proof allows for the two sums (Sampler.TrySample).
            Assert.Equal(expected.ExpSum, actual.ExpSum, expected.ExpSum * (4.0 * expected.WithinCutoff + 64) / 9007199254740992.0);
        }
    }

    private static TokenSelectionRequest Request(bool greedy, int wanted, bool penalize) =>
        new(greedy, wanted, CutoffGap: 4f, penalize ? new LogitPenalties(1.3f, 0.5f, 0.25f) : LogitPenalties.None,
            penalize ? PenaltyTokens : [], penalize ? PenaltyCounts : []);

    private static void AssertSameBits(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (!(float.IsNaN(expected[i]) && float.IsNaN(actual[i])) && BitConverter.SingleToUInt32Bits(expected[i]) != BitConverter.SingleToUInt32Bits(actual[i]))
                Assert.Fail($"value {i}: {expected[i]:R} on the host, {actual[i]:R} on the GPU");
    }

    /// <summary>The generator's decode loop written out over <see cref="Model.ForwardSelect"/>, for <paramref name="count"/> tokens.</summary>
    private static List<int> ForwardSelectLoop(LoadedModel loaded, int[] prompt, SamplingOptions options, int count)
    {
        Model model = loaded.Model;
        var sampler = new Sampler(model.VocabSize, options);
        var candidates = new TokenCandidates();
        var session = loaded.CreateSession(64);
        foreach (int id in prompt) sampler.Accept(id);
        model.ForwardSelect(session, prompt, sampler.SelectionRequest(), candidates);
        var tokens = new List<int>();
        while (tokens.Count < count)
        {
            int token = sampler.TrySample(candidates, out int chosen) ? chosen : sampler.SamplePenalized(model.SelectedLogits(session));
            tokens.Add(token);
            sampler.Accept(token);
            if (tokens.Count < count) model.ForwardSelect(session, [token], sampler.SelectionRequest(), candidates);
        }
        return tokens;
    }

    public static TheoryData<string> Samplings => new() { "greedy", "top-p+min-p+penalties", "top-k", "flat" };

    private static SamplingOptions Sampling(string name) => name switch
    {
        "greedy" => SamplingOptions.Greedy with { RepetitionPenalty = 1.2f },
        "top-p+min-p+penalties" => new SamplingOptions { Temperature = 0.8f, TopP = 0.9f, MinP = 0.02f, RepetitionPenalty = 1.1f, PresencePenalty = 0.2f, FrequencyPenalty = 0.1f, Seed = 7 },
        "top-k" => new SamplingOptions { Temperature = 1f, TopK = 20, TopP = 1f, Seed = 8 },
        "flat" => new SamplingOptions { Temperature = 1.5f, TopP = 0.99f, Seed = 9 },
        _ => throw new ArgumentException(name),
    };

    /// <summary>
    /// A Qwen2-kind model on the GPU generates 32 tokens twice: selecting on the GPU (only candidates come back) and
    /// with the host sampler over the full logits copied back. The tokens are the same.
    /// </summary>
    [Theory]
    [MemberData(nameof(Samplings))]
    public void GeneratingWithSelectionOnTheGpuGivesTheHostSamplersTokens(string sampling)
    {
        gpu.Require();
        var spec = new SyntheticModelSpec
        {
            Architecture = "qwen2", VocabSize = 384, HiddenSize = 128, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 256,
            DefaultType = GgmlType.Q4_K, WeightScale = 1f, RopeBase = 1000000f, Seed = 23,
        };
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-sampling");
        using LoadedModel loaded = LoadedModel.Open(synthesized.Path, new ModelOptions().OnGpu());
        var backend = (CudaBackend)loaded.Model.Backend;
        var options = new GenerationOptions { MaxTokens = 32, Sampling = Sampling(sampling), SplitReasoning = false };
        int[] prompt = Enumerable.Range(0, 6).Select(i => (i * 53 + 11) % spec.VocabSize).ToArray();
        long before = backend.TokenSelections;
        GenerationResult onGpu = new Generator(loaded.Model, loaded.Tokenizer, selectOnBackend: true).Generate(loaded.CreateSession(64), prompt, options, cancellationToken: TestContext.Current.CancellationToken);
        long selections = backend.TokenSelections - before;
        GenerationResult onHost = new Generator(loaded.Model, loaded.Tokenizer, selectOnBackend: false).Generate(loaded.CreateSession(64), prompt, options, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(onHost.OutputTokens, onGpu.OutputTokens);
        Assert.True(onGpu.OutputTokens.Count == 32 || onGpu.FinishReason == FinishReason.EndOfGeneration);
        Assert.Equal(onGpu.OutputTokens.Count + (onGpu.FinishReason == FinishReason.EndOfGeneration ? 1 : 0), selections);
        Assert.Equal(before + selections, backend.TokenSelections); // the host run selected nothing on the GPU

        // With the GPU's selection off, ForwardSelect selects on the host from the row read back: the same tokens.
        backend.SelectsTokens = false;
        Assert.Equal(onHost.OutputTokens, ForwardSelectLoop(loaded, prompt, options.Sampling, onHost.OutputTokens.Count));
        Assert.Equal(before + selections, backend.TokenSelections);
    }
}
