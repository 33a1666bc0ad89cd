using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Runtime;
using Xunit.Abstractions;

namespace Fathom.Tests.Models;

/// <summary>
/// <see cref="Model.DecodeBatch"/>: sessions at different positions decoded together give each session the logits
/// its own single-session <see cref="Model.Forward(InferenceSession, ReadOnlySpan{int}, Span{float}, bool)"/>
/// gives for the same history, and misuse fails before anything is written.
/// </summary>
public sealed class BatchDecodeTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-5;
    private const int Steps = 8;

    public static TheoryData<string> Variants => new() { "llama", "qwen2", "deepseek2-v2-lite", "deepseek2-v3" };

    private static Model Load(string variant, out SyntheticModelSpec spec)
    {
        spec = LlamaCppAgreementTests.Spec(variant);
        GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(spec)));
        return ModelLoader.Load(file, new ModelOptions { Threads = 2 });
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void EachSessionGetsTheLogitsOfItsOwnSingleSessionForward(string variant)
    {
        using Model model = Load(variant, out SyntheticModelSpec spec);
        int vocab = model.VocabSize;
        int[][] prompts = [ModelTestKit.Prompt(vocab, 5, spec.Seed + 1), ModelTestKit.Prompt(vocab, 11, spec.Seed + 2), ModelTestKit.Prompt(vocab, 2, spec.Seed + 3)];
        int count = prompts.Length;
        var batched = new InferenceSession[count];
        var alone = new InferenceSession[count];
        var next = new int[count];
        for (int s = 0; s < count; s++)
        {
            batched[s] = model.CreateSession(32);
            alone[s] = model.CreateSession(32);
            float[] l = model.Forward(batched[s], prompts[s]);
            Assert.Equal(l, model.Forward(alone[s], prompts[s]));
            next[s] = ModelTestKit.ArgMax(l);
        }

        var logits = new float[count * vocab];
        var order = new InferenceSession[count];
        var tokens = new int[count];
        double worst = 0;
        for (int step = 0; step < Steps; step++)
        {
            // Rotate the batch order each step, so a session's rows are not always the same rows of the batch.
            for (int i = 0; i < count; i++)
            {
                int s = (i + step) % count;
                order[i] = batched[s];
                tokens[i] = next[s];
            }
            model.DecodeBatch(order, tokens, logits);
            for (int i = 0; i < count; i++)
            {
                int s = (i + step) % count;
                float[] expected = model.Forward(alone[s], [next[s]]);
                ReadOnlySpan<float> actual = logits.AsSpan(i * vocab, vocab);
                double error = ModelTestKit.RelativeL2(actual, expected);
                worst = Math.Max(worst, error);
                Assert.True(error <= Tolerance, $"{variant}: step {step}, session {s} (position {alone[s].Position - 1}): relative L2 {error:E2} > {Tolerance:E0}");
                // On the CPU a row's dot products do not depend on the other rows of its batch, so the logits are
                // not merely close but the same bits.
                Assert.True(actual.SequenceEqual(expected), $"{variant}: step {step}, session {s}: logits close ({error:E2}) but not identical");
                next[s] = ModelTestKit.ArgMax(expected);
            }
        }
        for (int s = 0; s < count; s++)
        {
            Assert.Equal(prompts[s].Length + Steps, batched[s].Position);
            Assert.Equal(alone[s].Tokens.ToArray(), batched[s].Tokens.ToArray());
        }
        output.WriteLine($"{variant}: worst relative L2 {worst:E2}");
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("deepseek2-v3")]
    public void ASteadyDecodeLoopAllocatesNothing(string variant)
    {
        using Model model = Load(variant, out SyntheticModelSpec spec);
        InferenceSession[] sessions = [model.CreateSession(32), model.CreateSession(32), model.CreateSession(32)];
        for (int s = 0; s < sessions.Length; s++) model.Forward(sessions[s], ModelTestKit.Prompt(spec.VocabSize, 3 + s, s));
        var logits = new float[sessions.Length * model.VocabSize];
        int[] tokens = [5, 6, 7];
        model.DecodeBatch(sessions, tokens, logits); // the first step sizes the scratch buffers

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int step = 0; step < 4; step++) model.DecodeBatch(sessions, tokens, logits);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        // A session's token history grows by doubling; from 4 to 8 tokens it stays within its first 64-token array.
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void AFullSessionIsNamedAndNothingIsWritten()
    {
        using Model model = Load("llama", out SyntheticModelSpec spec);
        InferenceSession roomy = model.CreateSession(16), full = model.CreateSession(4), other = model.CreateSession(16);
        model.Forward(roomy, ModelTestKit.Prompt(spec.VocabSize, 3, 1));
        model.Forward(full, ModelTestKit.Prompt(spec.VocabSize, 4, 2));
        model.Forward(other, ModelTestKit.Prompt(spec.VocabSize, 6, 3));
        float[] roomyNext = Snapshot(roomy), otherNext = Snapshot(other);

        var logits = new float[3 * model.VocabSize];
        var e = Assert.Throws<ContextFullException>(() => model.DecodeBatch([roomy, full, other], [1, 2, 3], logits));
        Assert.Equal(1, e.BatchIndex);
        Assert.Equal(4, e.Capacity);
        Assert.Contains("Session 1", e.Message);

        Assert.Equal((3, 4, 6), (roomy.Position, full.Position, other.Position));
        Assert.Equal(roomyNext, Snapshot(roomy));
        Assert.Equal(otherNext, Snapshot(other));
        Assert.All(logits, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void MismatchedOrRepeatedSessionsAreRejected()
    {
        using Model model = Load("llama", out SyntheticModelSpec spec);
        InferenceSession a = model.CreateSession(8), b = model.CreateSession(8);
        model.Forward(a, [1, 2]);
        var logits = new float[3 * model.VocabSize];

        Assert.Throws<ArgumentException>(() => model.DecodeBatch([a, b], [1, 2, 3], logits));
        Assert.Throws<ArgumentException>(() => model.DecodeBatch([a, b], [1], logits));
        Assert.Throws<ArgumentException>(() => model.DecodeBatch([], [], logits));
        var repeated = Assert.Throws<ArgumentException>(() => model.DecodeBatch([a, b, a], [1, 2, 3], logits));
        Assert.Contains("same session", repeated.Message);
        Assert.Throws<ArgumentException>(() => model.DecodeBatch([a, null!], [1, 2], logits));
        Assert.Throws<ArgumentException>(() => model.DecodeBatch([a, b], [1, 2], new float[model.VocabSize]));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.DecodeBatch([a, b], [1, spec.VocabSize], logits));

        Assert.Equal((2, 0), (a.Position, b.Position));
        Assert.Equal([1, 2], a.Tokens.ToArray());
    }

    /// <summary>Every layer's key and value rows at the session's next position: what a decode step would write.</summary>
    private static float[] Snapshot(InferenceSession session)
    {
        var rows = new List<float>();
        for (int layer = 0; layer < session.Cache.LayerCount; layer++)
        {
            KvLayerCache cache = session.Cache[layer];
            rows.AddRange(cache.KeyRow(session.Position).ToArray());
            rows.AddRange(cache.ValueRow(session.Position).ToArray());
        }
        return [.. rows];
    }
}
