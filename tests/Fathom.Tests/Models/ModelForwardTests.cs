using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Runtime;

namespace Fathom.Tests.Models;

/// <summary>
/// Properties of Fathom's forward pass that need no reference: batching, chunking and interleaved sessions change
/// nothing, and misuse fails with a clear error.
/// </summary>
public sealed class ModelForwardTests
{
    public static TheoryData<string> Variants => new() { "llama", "qwen2", "deepseek2-v2-lite", "deepseek2-v3" };

    [Theory]
    [MemberData(nameof(Variants))]
    public void BatchedPromptGivesTheSameLogitsAsTokenByTokenDecoding(string variant)
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec(variant);
        using GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(spec)));
        using Model model = ModelLoader.Load(file, new ModelOptions { Threads = 2 });
        int[] tokens = ModelTestKit.Prompt(spec.VocabSize, 20, spec.Seed + 1);
        int vocab = model.VocabSize;

        InferenceSession batched = model.CreateSession(32);
        float[] all = model.Forward(batched, tokens, allPositions: true);

        InferenceSession single = model.CreateSession(32);
        InferenceSession chunked = model.CreateSession(32);
        var chunkLogits = new List<float[]>();
        for (int start = 0; start < tokens.Length; start += 7)
        {
            int[] chunk = tokens[start..Math.Min(tokens.Length, start + 7)];
            float[] l = model.Forward(chunked, chunk, allPositions: true);
            for (int i = 0; i < chunk.Length; i++) chunkLogits.Add(l[(i * vocab)..((i + 1) * vocab)]);
        }
        for (int i = 0; i < tokens.Length; i++)
        {
            float[] one = model.Forward(single, [tokens[i]]);
            ReadOnlySpan<float> fromBatch = all.AsSpan(i * vocab, vocab);
            Assert.True(ModelTestKit.RelativeL2(one, fromBatch) <= 1e-6, $"{variant}: position {i}: batched and single-token logits differ");
            Assert.True(ModelTestKit.RelativeL2(chunkLogits[i], fromBatch) <= 1e-6, $"{variant}: position {i}: chunked and batched logits differ");
        }
        Assert.Equal(tokens.Length, batched.Position);

        // Last-position logits of a batch are the last row of the all-positions form.
        InferenceSession lastOnly = model.CreateSession(32);
        Assert.Equal(all[^vocab..], model.Forward(lastOnly, tokens));
    }

    /// <summary>
    /// <see cref="ModelOptions.DecompressFusedKvB"/> (llama.cpp's attention for a fused attn_kv_b): the cache holds a key
    /// (k_nope and the rotated key) and a value per head; the logits are the absorbed form's up to float rounding (the
    /// same products, associated otherwise), a batch equals token-by-token decoding; a file with split k_b/v_b ignores it.
    /// </summary>
    [Fact]
    public void DecompressedFusedKvBCachesHeadsAndGivesTheAbsorbedFormsLogits()
    {
        var decompressedOptions = new ModelOptions { Threads = 2, DecompressFusedKvB = true };
        SyntheticModelSpec fused = LlamaCppAgreementTests.Spec("deepseek2-v2-lite");
        Assert.False(fused.SplitKvB);
        using (GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(fused))))
        using (Model absorbed = ModelLoader.Load(file, new ModelOptions { Threads = 2 }))
        using (Model decompressed = ModelLoader.Load(file, decompressedOptions))
        {
            int[] tokens = ModelTestKit.Prompt(fused.VocabSize, 12, fused.Seed + 2);
            int vocab = decompressed.VocabSize;
            float[] reference = absorbed.Forward(absorbed.CreateSession(16), tokens, allPositions: true);
            InferenceSession batch = decompressed.CreateSession(16), single = decompressed.CreateSession(16);
            float[] all = decompressed.Forward(batch, tokens, allPositions: true);
            Assert.True(ModelTestKit.RelativeL2(all, reference) <= 1e-4, $"decompressed against absorbed: {ModelTestKit.RelativeL2(all, reference):E2}");
            for (int i = 0; i < tokens.Length; i++)
                Assert.True(ModelTestKit.RelativeL2(decompressed.Forward(single, [tokens[i]]), all.AsSpan(i * vocab, vocab)) <= 1e-6, $"position {i}: batched and single-token logits differ");

            KvLayerCache cache = batch.Cache[0];
            Assert.False(cache.ValuesShareKeys);
            Assert.Equal(fused.Heads * (fused.QkNopeHeadDim + fused.QkRopeHeadDim), cache.KeyWidth);
            Assert.Equal(fused.Heads * fused.VHeadDim, cache.ValueWidth);
        }

        SyntheticModelSpec split = LlamaCppAgreementTests.Spec("deepseek2-v3");
        using (GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(split))))
        using (Model plain = ModelLoader.Load(file, new ModelOptions { Threads = 2 }))
        using (Model withOption = ModelLoader.Load(file, decompressedOptions))
        {
            int[] tokens = ModelTestKit.Prompt(split.VocabSize, 6, split.Seed + 2);
            InferenceSession session = withOption.CreateSession(8);
            Assert.Equal(plain.Forward(plain.CreateSession(8), tokens, allPositions: true), withOption.Forward(session, tokens, allPositions: true));
            Assert.True(session.Cache[0].ValuesShareKeys);
            Assert.Equal(split.KvLoraRank + split.QkRopeHeadDim, session.Cache[0].KeyWidth);
        }
    }

    [Fact]
    public void InterleavedSessionsDoNotDisturbEachOther()
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("deepseek2-v3");
        using GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(spec)));
        using Model model = ModelLoader.Load(file, new ModelOptions { Threads = 2 });
        int[] a = ModelTestKit.Prompt(spec.VocabSize, 6, 1), b = ModelTestKit.Prompt(spec.VocabSize, 9, 2);

        float[] aAlone = model.Forward(model.CreateSession(16), a);
        float[] bAlone = model.Forward(model.CreateSession(16), b);

        InferenceSession sa = model.CreateSession(16), sb = model.CreateSession(16);
        model.Forward(sa, a[..3]);
        model.Forward(sb, b[..5]);
        model.Forward(sa, a[3..5]);
        float[] bInterleaved = model.Forward(sb, b[5..]);
        float[] aInterleaved = model.Forward(sa, a[5..]);
        Assert.Equal(aAlone, aInterleaved);
        Assert.Equal(bAlone, bInterleaved);
    }

    [Fact]
    public void ResetAndTruncateReplayTheSameLogits()
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("qwen2");
        using GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(spec)));
        using Model model = ModelLoader.Load(file, new ModelOptions { Threads = 1 });
        int[] tokens = ModelTestKit.Prompt(spec.VocabSize, 10, 3);
        InferenceSession s = model.CreateSession(16);
        float[] first = model.Forward(s, tokens);
        s.Truncate(6);
        Assert.Equal(first, model.Forward(s, tokens[6..]));
        s.Reset();
        Assert.Equal(first, model.Forward(s, tokens));
    }

    [Fact]
    public void FullContextAndBadTokensFailClearly()
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("llama");
        using GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(spec)));
        using Model model = ModelLoader.Load(file, new ModelOptions { Threads = 1 });
        InferenceSession s = model.CreateSession(4);
        model.Forward(s, [1, 2, 3]);
        var full = Assert.Throws<ContextFullException>(() => model.Forward(s, [4, 5]));
        Assert.Equal(3, full.Position);
        Assert.Equal(4, full.Capacity);
        Assert.Equal(3, s.Position); // nothing was written
        model.Forward(s, [4]);
        Assert.Throws<ContextFullException>(() => model.Forward(s, [5]));

        InferenceSession t = model.CreateSession(8);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(t, [model.VocabSize]));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(t, [-1]));
        Assert.Throws<ArgumentException>(() => model.Forward(t, ReadOnlySpan<int>.Empty));
        Assert.Equal(0, t.Position);
    }

    [Fact]
    public void InconsistentMetadataIsRejectedWithTheKeyNamed()
    {
        // 8 query heads cannot share 3 key/value heads.
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("llama") with { Heads = 8, KvHeads = 3 };
        using GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(spec)));
        var e = Assert.Throws<GgufFormatException>(() => ModelLoader.Load(file));
        Assert.Contains("head_count_kv", e.Message);
    }

    [Fact]
    public void TensorShapesThatContradictTheHyperparametersAreRejected()
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("qwen2");
        GgufWriter writer = ModelSynthesizer.Build(spec);
        writer.Set(GgufKeys.Arch.FeedForwardLength("qwen2"), 300u); // tensors were built for 256
        using GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(writer));
        var e = Assert.Throws<GgufFormatException>(() => ModelLoader.Load(file));
        Assert.Contains("ffn_gate.weight", e.Message);
    }

    [Fact]
    public void UnknownArchitectureIsNamed()
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("llama");
        GgufWriter writer = ModelSynthesizer.Build(spec);
        writer.Set(GgufKeys.General.Architecture, "mamba");
        using GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(writer));
        Exception e = Assert.ThrowsAny<Exception>(() => ModelLoader.Load(file));
        Assert.Contains("mamba", e.Message);
    }
}
