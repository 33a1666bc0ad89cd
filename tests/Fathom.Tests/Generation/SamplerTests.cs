using Fathom.Generation;

namespace Fathom.Tests.Generation;

public class SamplerTests
{
    private static float[] RandomLogits(int n, int seed, float scale = 3f)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();
    }

    private static double[] Softmax(ReadOnlySpan<float> logits, float temperature = 1f)
    {
        double max = double.MinValue;
        foreach (float l in logits) max = Math.Max(max, l);
        double[] p = new double[logits.Length];
        double sum = 0;
        for (int i = 0; i < p.Length; i++) sum += p[i] = Math.Exp((logits[i] - max) / temperature);
        for (int i = 0; i < p.Length; i++) p[i] /= sum;
        return p;
    }

    [Fact]
    public void GreedyPicksTheLargestLogit()
    {
        float[] logits = RandomLogits(1000, 1);
        int expected = Array.IndexOf(logits, logits.Max());
        var sampler = new Sampler(logits.Length, SamplingOptions.Greedy);
        Assert.Equal(expected, sampler.Sample(logits));
        Assert.Equal(expected, new Sampler(logits.Length, new SamplingOptions { Temperature = 1, TopK = 1, Seed = 5 }).Sample(logits));
    }

    [Fact]
    public void SameSeedSameTokens_DifferentSeedDifferentTokens()
    {
        float[] logits = RandomLogits(500, 2, scale: 1f);
        int[] Run(ulong seed)
        {
            var s = new Sampler(logits.Length, new SamplingOptions { Temperature = 1f, TopP = 1f, Seed = seed });
            return Enumerable.Range(0, 50).Select(_ => s.Sample(logits)).ToArray();
        }
        Assert.Equal(Run(42), Run(42));
        Assert.NotEqual(Run(42), Run(43));
    }

    [Fact]
    public void DrawsFollowTheTemperedDistribution()
    {
        float[] logits = [2f, 1f, 0f, -1f, 0.5f];
        const float temperature = 0.7f;
        double[] p = Softmax(logits, temperature);
        var sampler = new Sampler(logits.Length, new SamplingOptions { Temperature = temperature, TopP = 1f, Seed = 7 });
        const int draws = 40_000;
        int[] counts = new int[logits.Length];
        for (int i = 0; i < draws; i++) counts[sampler.Sample(logits)]++;
        for (int i = 0; i < logits.Length; i++)
        {
            double sd = Math.Sqrt(draws * p[i] * (1 - p[i]));
            Assert.InRange(counts[i], draws * p[i] - 5 * sd, draws * p[i] + 5 * sd);
        }
    }

    [Fact]
    public void TopPKeepsTheSmallestNucleus()
    {
        float[] logits = [3f, 2f, 1f, 0f, -5f];
        double[] p = Softmax(logits);
        // With top-p just above p0 + p1, only tokens 0..2 can appear... and with top-p below p0 only token 0.
        var onlyFirst = new Sampler(logits.Length, new SamplingOptions { Temperature = 1f, TopP = (float)(p[0] * 0.99), Seed = 1 });
        Assert.All(Enumerable.Range(0, 200), _ => Assert.Equal(0, onlyFirst.Sample(logits)));
        var firstTwo = new Sampler(logits.Length, new SamplingOptions { Temperature = 1f, TopP = (float)(p[0] + p[1] * 0.5), Seed = 1 });
        var seen = Enumerable.Range(0, 2000).Select(_ => firstTwo.Sample(logits)).ToHashSet();
        Assert.Equal(new HashSet<int> { 0, 1 }, seen);
    }

    [Fact]
    public void TopKAndMinPBoundTheCandidates()
    {
        float[] logits = RandomLogits(2000, 3, scale: 0.5f);
        int[] top5 = logits.Select((v, i) => (v, i)).OrderByDescending(x => x.v).Take(5).Select(x => x.i).ToArray();
        var topK = new Sampler(logits.Length, new SamplingOptions { Temperature = 1f, TopK = 5, TopP = 1f, Seed = 3 });
        Assert.All(Enumerable.Range(0, 500), _ => Assert.Contains(topK.Sample(logits), top5));

        float[] peaked = [5f, 4.5f, 0f, 0f, 0f];
        var minP = new Sampler(peaked.Length, new SamplingOptions { Temperature = 1f, TopP = 1f, MinP = 0.5f, Seed = 3 });
        var seen = Enumerable.Range(0, 1000).Select(_ => minP.Sample(peaked)).ToHashSet();
        Assert.Equal(new HashSet<int> { 0, 1 }, seen);
    }

    [Fact]
    public void PenaltiesDemoteSeenTokens()
    {
        float[] logits = [2f, 1.9f, 0f];
        var repeat = new Sampler(3, SamplingOptions.Greedy with { RepetitionPenalty = 1.5f });
        Assert.Equal(0, repeat.Sample(logits));
        repeat.Accept(0);
        Assert.Equal(1, repeat.Sample(logits)); // 2 / 1.5 < 1.9

        var presence = new Sampler(3, SamplingOptions.Greedy with { PresencePenalty = 0.2f });
        presence.Accept(0);
        Assert.Equal(1, presence.Sample(logits));

        var frequency = new Sampler(3, SamplingOptions.Greedy with { FrequencyPenalty = 0.06f, PenaltyLastN = 2 });
        frequency.Accept(0);
        Assert.Equal(0, frequency.Sample(logits)); // 2 - 0.06 > 1.9
        frequency.Accept(0);
        Assert.Equal(1, frequency.Sample(logits)); // 2 - 0.12 < 1.9
        frequency.Accept(2);
        frequency.Accept(2); // the window of 2 forgets token 0
        Assert.Equal(0, frequency.Sample(logits));
    }

    [Fact]
    public void SamplingDoesNotAllocatePerToken()
    {
        float[] logits = RandomLogits(32_000, 9);
        var sampler = new Sampler(logits.Length, new SamplingOptions { Temperature = 0.6f, TopP = 0.95f, TopK = 40, Seed = 1 });
        for (int i = 0; i < 10; i++) sampler.Accept(sampler.Sample(logits));
        // A per-token allocation shows in every round; the runtime's own first-time work (the JIT moving Sample to its
        // next tier while the round runs) may show in one, so the best of three rounds must be zero.
        long fewest = long.MaxValue;
        for (int round = 0; round < 3 && fewest > 0; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 100; i++) sampler.Sample(logits);
            fewest = Math.Min(fewest, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.Equal(0, fewest);
    }

    [Theory]
    [InlineData(0.6f, 0, 0.95f, 0f, 1f)]    // R1's recommended sampling
    [InlineData(0.8f, 40, 0.9f, 0.05f, 1.1f)]
    [InlineData(1.0f, 0, 1f, 0.1f, 1f)]
    public void ALargeVocabularyGetsTheFullSortsTokensFromCandidates(float temperature, int topK, float topP, float minP, float repetition)
    {
        // 152 064 logits as a model gives them (a few strong tokens over a wide spread), so nearly all lie within the
        // cutoff: Sample takes HostTokenSelection's candidates when they decide the token, and must choose exactly what
        // the full sort chooses, drawing the same random numbers.
        const int vocab = 152_064;
        var options = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP, MinP = minP, RepetitionPenalty = repetition, Seed = 21 };
        var shortcut = new Sampler(vocab, options);
        var full = new Sampler(vocab, options) { SelectsCandidates = false };
        var random = new Random(8);
        for (int step = 0; step < 12; step++)
        {
            float[] logits = RandomLogits(vocab, step);
            for (int p = 0; p < 6; p++) logits[random.Next(vocab)] = 14f + 8f * (float)random.NextDouble();
            int token = shortcut.Sample(logits);
            Assert.Equal(full.Sample(logits), token);
            shortcut.Accept(token);
            full.Accept(token);
        }
        Assert.True(shortcut.CandidateDecisions > 0, "the candidates never decided a token: the test would compare the full sort with itself");
        Assert.Equal(0, full.CandidateDecisions);
    }

    [Fact]
    public void InvalidOptionsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => new Sampler(10, new SamplingOptions { TopP = 0 }));
        Assert.Throws<ArgumentException>(() => new Sampler(10, new SamplingOptions { TopK = -1 }));
        Assert.Throws<ArgumentException>(() => new Sampler(10, new SamplingOptions { MinP = 1 }));
        Assert.Throws<ArgumentException>(() => new Sampler(10, new SamplingOptions { RepetitionPenalty = 0 }));
        Assert.Throws<ArgumentException>(() => new Sampler(10, SamplingOptions.Greedy).Sample(new float[9]));
    }

    [Fact]
    public void TopKAmongEqualLogitsKeepsTheLowerIds()
    {
        // Twelve tokens share the largest logit; top-k 2 keeps the two lowest ids, as the candidates' sort orders them.
        float[] logits = new float[40];
        for (int i = 0; i < logits.Length; i++) logits[i] = i % 3 == 0 ? 5f : 0f;
        var sampler = new Sampler(logits.Length, new SamplingOptions { Temperature = 1f, TopK = 2, TopP = 1f, Seed = 2 });
        var seen = Enumerable.Range(0, 400).Select(_ => sampler.Sample(logits)).ToHashSet();
        Assert.Equal(new HashSet<int> { 0, 3 }, seen);
    }
}
