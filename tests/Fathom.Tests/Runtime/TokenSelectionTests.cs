using System.Numerics.Tensors;
using Fathom.Generation;
using Fathom.Runtime.Sampling;
using Fathom.Tests.Shared;

namespace Fathom.Tests.Runtime;

/// <summary>
/// The host token selection (the CPU default of <see cref="ITokenSelectingBackend"/>, and the reference the GPU's is
/// tested against) and the sampler's candidate path: the same tokens as the sampler over the full row, for every
/// option combination, penalties and ties.
/// </summary>
public class TokenSelectionTests
{
    public static TheoryData<float, int, float, float, int> Options()
    {
        var data = new TheoryData<float, int, float, float, int>();
        foreach (float temperature in new[] { 0f, 0.7f, 1.3f })
            foreach (int topK in new[] { 0, 3, 40, 1500 })
                foreach (float topP in new[] { 1f, 0.9f })
                    foreach (float minP in new[] { 0f, 0.1f })
                        foreach (int penalties in new[] { 0, 1, 2 })
                            if (temperature > 0 || (topK == 0 && topP == 1 && minP == 0)) data.Add(temperature, topK, topP, minP, penalties);
        return data;
    }

    private static SamplingOptions Make(float temperature, int topK, float topP, float minP, int penalties, ulong seed) => new()
    {
        Temperature = temperature,
        TopK = topK,
        TopP = topP,
        MinP = minP,
        RepetitionPenalty = penalties switch { 1 => 1.3f, 2 => 0.8f, _ => 1f },
        PresencePenalty = penalties switch { 1 => 0.5f, 2 => -0.75f, _ => 0f },
        FrequencyPenalty = penalties == 1 ? 0.25f : 0f,
        PenaltyLastN = 16,
        Seed = seed,
    };

    [Theory]
    [MemberData(nameof(Options))]
    public void TheCandidatePathChoosesTheSamplersTokens(float temperature, int topK, float topP, float minP, int penalties)
    {
        const int vocab = 1200;
        var rng = new Random(HashCode.Combine(temperature, topK, topP, minP, penalties) & 0xFFFF);
        SamplingOptions options = Make(temperature, topK, topP, minP, penalties, seed: 99);
        var full = new Sampler(vocab, options) { SelectsCandidates = false }; // the full sort, the reference
        var selecting = new Sampler(vocab, options);
        var candidates = new TokenCandidates();
        var row = new float[vocab];
        for (int step = 0; step < 12; step++)
        {
            float[] logits = TestLogits.Row(vocab, step % 3, rng);
            int expected = full.Sample(logits);
            logits.CopyTo(row);
            HostTokenSelection.Select(row, selecting.SelectionRequest(), candidates);
            int token = selecting.TrySample(candidates, out int chosen) ? chosen : selecting.SamplePenalized(row);
            Assert.Equal(expected, token);
            full.Accept(token);
            selecting.Accept(token);
            // Penalized tokens near the top make penalties matter: feed back a large one now and then.
            if (step % 4 == 1) { full.Accept(TensorPrimitives.IndexOfMax<float>(logits)); selecting.Accept(TensorPrimitives.IndexOfMax<float>(logits)); }
        }
    }

    [Fact]
    public void CandidatesDecideATopPCutWithinThemWithoutTheFullRow()
    {
        // 12 peaks over 20 000 noise logits: top-p 0.9 ends among the peaks, far inside 256 candidates, while 20 000
        // logits are within the cutoff, so only the sum's bound proves the cut.
        const int vocab = 20_000;
        var rng = new Random(5);
        var options = new SamplingOptions { Temperature = 0.8f, TopP = 0.9f, Seed = 3 };
        var full = new Sampler(vocab, options) { SelectsCandidates = false }; // the full sort, the reference
        var selecting = new Sampler(vocab, options);
        var candidates = new TokenCandidates();
        for (int step = 0; step < 20; step++)
        {
            float[] logits = TestLogits.Row(vocab, 1, rng);
            float[] row = (float[])logits.Clone();
            HostTokenSelection.Select(row, selecting.SelectionRequest(), candidates);
            Assert.Equal(Sampler.DefaultCandidates, candidates.Count);
            Assert.True(candidates.WithinCutoff > candidates.Count);
            Assert.True(selecting.TrySample(candidates, out int token));
            Assert.Equal(full.Sample(logits), token);
        }
    }

    [Fact]
    public void FlatLogitsFallBackWithoutDrawingAndStayInStep()
    {
        // Flat noise: top-p 0.95 needs most of the 5 000 tokens, beyond the candidates; the fallback draws only once.
        const int vocab = 5000;
        var rng = new Random(6);
        var options = new SamplingOptions { Temperature = 1f, TopP = 0.95f, Seed = 11 };
        var full = new Sampler(vocab, options) { SelectsCandidates = false }; // the full sort, the reference
        var selecting = new Sampler(vocab, options);
        var candidates = new TokenCandidates();
        for (int step = 0; step < 6; step++)
        {
            float[] logits = TestLogits.Row(vocab, 0, rng);
            float[] row = (float[])logits.Clone();
            HostTokenSelection.Select(row, selecting.SelectionRequest(), candidates);
            Assert.False(selecting.TrySample(candidates, out _));
            Assert.Equal(full.Sample(logits), selecting.SamplePenalized(row));
        }
    }

    [Theory]
    [InlineData(0, 256)]
    [InlineData(1, 40)]
    [InlineData(2, 256)]
    [InlineData(2, 1024)]
    public void SelectionEqualsSortingTheWholeRow(int kind, int wanted)
    {
        const int vocab = 3000;
        float[] logits = TestLogits.Row(vocab, kind, new Random(kind * 31 + wanted));
        var candidates = new TokenCandidates();
        const float gap = 4f;
        HostTokenSelection.Select((float[])logits.Clone(), new TokenSelectionRequest(false, wanted, gap, LogitPenalties.None, [], []), candidates);

        float best = logits.Max();
        int[] within = Enumerable.Range(0, vocab).Where(i => logits[i] >= best - gap).ToArray();
        int[] order = within.OrderByDescending(i => logits[i]).ThenBy(i => i).Take(wanted).ToArray();
        Assert.Equal(order, candidates.Ids.AsSpan(0, candidates.Count).ToArray());
        Assert.Equal(order.Select(i => logits[i]), candidates.Values.AsSpan(0, candidates.Count).ToArray());
        Assert.Equal(within.Length, candidates.WithinCutoff);
        Assert.Equal(best, candidates.Best);
        double sum = within.Sum(i => Math.Exp(logits[i] - best));
        Assert.Equal(sum, candidates.ExpSum, sum * 1e-12);
    }

    [Fact]
    public void PenaltiesAreAppliedInPlaceAndOnlyToTokensInTheRow()
    {
        float[] logits = [2f, -2f, 0.5f, 0f];
        var penalties = new LogitPenalties(2f, 0.25f, 0.5f);
        HostTokenSelection.Select(logits, new TokenSelectionRequest(true, 1, 0, penalties, [0, 1, 7], [1, 3, 2]), new TokenCandidates(1));
        Assert.Equal([2f / 2f - (0.25f + 0.5f * 1), -2f * 2f - (0.25f + 0.5f * 3), 0.5f, 0f], logits);
    }

    /// <summary>
    /// The arg-max rule the GPU's kernel implements as one key order (the first NaN; else the largest value, +0 above
    /// −0, the first of equals) is the one TensorPrimitives.IndexOfMax follows, which the sampler and the host selection use.
    /// </summary>
    [Theory]
    [InlineData(17)]
    [InlineData(1000)]
    [InlineData(4099)]
    public void IndexOfMaxFollowsTheKernelsOrder(int length)
    {
        var rng = new Random(length);
        for (int trial = 0; trial < 200; trial++)
        {
            float[] v = new float[length];
            for (int i = 0; i < length; i++) v[i] = rng.Next(4) switch { 0 => -0f, 1 => 0f, 2 => -1f, _ => (float)Math.Round(rng.NextDouble() * 3 - 2) };
            if (trial % 5 == 0) v[rng.Next(length)] = float.NaN;
            if (trial % 7 == 0) v[rng.Next(length)] = float.PositiveInfinity;
            Assert.Equal(KernelArgMax(v), TensorPrimitives.IndexOfMax<float>(v));
        }
    }

    /// <summary>The GPU's rule, written as a plain scan.</summary>
    internal static int KernelArgMax(ReadOnlySpan<float> v)
    {
        static uint Key(float x)
        {
            if (float.IsNaN(x)) return uint.MaxValue;
            uint b = BitConverter.SingleToUInt32Bits(x);
            return (b & 0x80000000u) != 0 ? ~b : b | 0x80000000u;
        }
        int best = 0;
        for (int i = 1; i < v.Length; i++)
            if (Key(v[i]) > Key(v[best])) best = i;
        return best;
    }
}
