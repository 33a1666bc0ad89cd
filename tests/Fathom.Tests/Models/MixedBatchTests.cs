using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Runtime;
using Xunit.Abstractions;

namespace Fathom.Tests.Models;

/// <summary>
/// <see cref="Model.ForwardBatch"/>, continuous batching: in one pass some sessions feed prompt chunks of several
/// tokens while others decode one, each at its own positions; every session gets the logits of running its own
/// tokens alone, and misuse fails before anything is written.
/// </summary>
public sealed class MixedBatchTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-5;

    public static TheoryData<string> Variants => new() { "llama", "qwen2", "deepseek2-v2-lite", "deepseek2-v3" };

    private static Model Load(string variant, out SyntheticModelSpec spec)
    {
        spec = LlamaCppAgreementTests.Spec(variant);
        GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(spec)));
        return ModelLoader.Load(file, new ModelOptions { Threads = 2 });
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void EachSequenceGetsTheLogitsOfRunningItAlone(string variant)
    {
        using Model model = Load(variant, out SyntheticModelSpec spec);
        int vocab = model.VocabSize;
        // Histories already in the cache before the mixed steps: empty, 5, 11 and 2 tokens.
        int[][] histories = [[], ModelTestKit.Prompt(vocab, 5, spec.Seed + 1), ModelTestKit.Prompt(vocab, 11, spec.Seed + 2), ModelTestKit.Prompt(vocab, 2, spec.Seed + 3)];
        // Two steps; in each, every session feeds a chunk of this many tokens (1 = a decode step).
        int[][] chunkLengths = [[7, 1, 3, 1], [1, 4, 1, 6]];
        int count = histories.Length;
        var batched = new InferenceSession[count];
        var alone = new InferenceSession[count];
        for (int s = 0; s < count; s++)
        {
            batched[s] = model.CreateSession(40);
            alone[s] = model.CreateSession(40);
            if (histories[s].Length == 0) continue;
            model.Forward(batched[s], histories[s]);
            model.Forward(alone[s], histories[s]);
        }

        var rng = new Random(spec.Seed);
        double worst = 0;
        for (int step = 0; step < chunkLengths.Length; step++)
        {
            var chunks = chunkLengths[step].Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(vocab - 8)).ToArray()).ToArray();
            // Odd steps run the batch in reverse, so a session's rows are not always the same rows of the batch.
            int[] order = step % 2 == 0 ? [0, 1, 2, 3] : [3, 2, 1, 0];
            var batch = order.Select(s => new BatchSequence(batched[s], chunks[s])).ToArray();
            int rows = chunks.Sum(c => c.Length);
            bool allPositions = step == 1;
            var logits = new float[(allPositions ? rows : count) * vocab];
            model.ForwardBatch(batch, logits, allPositions);

            int row = 0;
            for (int i = 0; i < count; i++)
            {
                int s = order[i];
                int firstPosition = alone[s].Position;
                float[] expected = model.Forward(alone[s], chunks[s], allPositions);
                int compared = allPositions ? chunks[s].Length : 1;
                for (int r = 0; r < compared; r++)
                {
                    double error = ModelTestKit.RelativeL2(logits.AsSpan((row + r) * vocab, vocab), expected.AsSpan(r * vocab, vocab));
                    worst = Math.Max(worst, error);
                    int position = firstPosition + (allPositions ? r : chunks[s].Length - 1);
                    Assert.True(error <= Tolerance, $"{variant}: step {step}, session {s}, position {position}: relative L2 {error:E2} > {Tolerance:E0}");
                }
                row += compared;
            }
        }
        for (int s = 0; s < count; s++)
        {
            Assert.Equal(alone[s].Position, batched[s].Position);
            Assert.Equal(alone[s].Tokens.ToArray(), batched[s].Tokens.ToArray());
        }
        output.WriteLine($"{variant}: worst relative L2 {worst:E2}");
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("deepseek2-v3")]
    public void ASteadyMixedLoopAllocatesNothing(string variant)
    {
        using Model model = Load(variant, out _);
        InferenceSession[] sessions = [model.CreateSession(48), model.CreateSession(48), model.CreateSession(48)];
        int[] chunk = [3, 4, 5, 6], one = [7];
        BatchSequence[] batch = [new(sessions[0], chunk), new(sessions[1], one), new(sessions[2], one)];
        var logits = new float[batch.Length * model.VocabSize];
        model.ForwardBatch(batch, logits); // the first step sizes the scratch buffers

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int step = 0; step < 4; step++)
        {
            // The chunk moves from session to session, as prompts arrive in a server.
            for (int i = 0; i < batch.Length; i++) batch[i] = new BatchSequence(sessions[i], i == step % batch.Length ? chunk : one);
            model.ForwardBatch(batch, logits);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        // Every session stays within its first 64-token history array.
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void ASessionWhoseChunkDoesNotFitIsNamedAndNothingIsWritten()
    {
        using Model model = Load("llama", out SyntheticModelSpec spec);
        InferenceSession decoding = model.CreateSession(16), prompting = model.CreateSession(8), other = model.CreateSession(16);
        model.Forward(decoding, ModelTestKit.Prompt(spec.VocabSize, 3, 1));
        model.Forward(prompting, ModelTestKit.Prompt(spec.VocabSize, 4, 2));
        float[] before = CacheCopy(decoding).Concat(CacheCopy(prompting)).Concat(CacheCopy(other)).ToArray();

        var logits = new float[3 * model.VocabSize];
        BatchSequence[] batch = [new(decoding, new[] { 1 }), new(prompting, new[] { 1, 2, 3, 4, 5 }), new(other, new[] { 1, 2 })];
        var e = Assert.Throws<ContextFullException>(() => model.ForwardBatch(batch, logits));
        Assert.Equal(1, e.BatchIndex);
        Assert.Equal((4, 5, 8), (e.Position, e.Tokens, e.Capacity));
        Assert.Contains("Session 1", e.Message);

        Assert.Equal((3, 4, 0), (decoding.Position, prompting.Position, other.Position));
        Assert.Equal(before, CacheCopy(decoding).Concat(CacheCopy(prompting)).Concat(CacheCopy(other)).ToArray());
        Assert.All(logits, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void MalformedBatchesAreRejected()
    {
        using Model model = Load("llama", out SyntheticModelSpec spec);
        InferenceSession a = model.CreateSession(8), b = model.CreateSession(8);
        model.Forward(a, [1, 2]);
        var logits = new float[4 * model.VocabSize];

        Assert.Throws<ArgumentException>(() => model.ForwardBatch([], logits));
        var empty = Assert.Throws<ArgumentException>(() => model.ForwardBatch([new(a, new[] { 1 }), new(b, Array.Empty<int>())], logits));
        Assert.Contains("sequence 1", empty.Message);
        var repeated = Assert.Throws<ArgumentException>(() => model.ForwardBatch([new(a, new[] { 1 }), new(b, new[] { 2 }), new(a, new[] { 3 })], logits));
        Assert.Contains("same session", repeated.Message);
        Assert.Throws<ArgumentException>(() => model.ForwardBatch([new(a, new[] { 1 }), new(null!, new[] { 2 })], logits));
        // Two sequences need two rows; all positions of 1 + 3 tokens need four.
        Assert.Throws<ArgumentException>(() => model.ForwardBatch([new(a, new[] { 1 }), new(b, new[] { 2, 3, 4 })], new float[model.VocabSize]));
        Assert.Throws<ArgumentException>(() => model.ForwardBatch([new(a, new[] { 1 }), new(b, new[] { 2, 3, 4 })], new float[3 * model.VocabSize], allPositions: true));
        var outside = Assert.Throws<ArgumentOutOfRangeException>(() => model.ForwardBatch([new(a, new[] { 1 }), new(b, new[] { 2, spec.VocabSize })], logits));
        Assert.Contains("sequence 1", outside.Message);

        Assert.Equal((2, 0), (a.Position, b.Position));
        Assert.Equal([1, 2], a.Tokens.ToArray());
    }

    private static float[] CacheCopy(InferenceSession session)
    {
        var values = new List<float>();
        for (int layer = 0; layer < session.Cache.LayerCount; layer++)
        {
            KvLayerCache cache = session.Cache[layer];
            for (int p = 0; p < session.Capacity; p++)
            {
                values.AddRange(cache.KeyRow(p).ToArray());
                values.AddRange(cache.ValueRow(p).ToArray());
            }
        }
        return [.. values];
    }
}
