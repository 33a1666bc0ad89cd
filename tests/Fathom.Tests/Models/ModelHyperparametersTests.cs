using Fathom.Gguf;
using Fathom.Models;
using Fathom.Tests.Gguf;
using Fathom.Tests.TestModels;
using LLama;
using LLama.Common;

namespace Fathom.Tests.Models;

public sealed class ModelHyperparametersTests
{
    private static GgufMetadata Metadata(IEnumerable<KeyValuePair<string, GgufValue>> pairs)
    {
        var writer = new GgufWriter().SetAll(pairs);
        using GgufFile file = GgufFile.Parse(GgufSamples.Bytes(writer), "model.gguf");
        return file.Metadata;
    }

    private static GgufMetadata With(Dictionary<string, GgufValue> baseline, params (string Key, GgufValue? Value)[] changes)
    {
        var d = new Dictionary<string, GgufValue>(baseline);
        foreach (var (key, value) in changes)
        {
            if (value is null) d.Remove(key);
            else d[key] = value;
        }
        return Metadata(d);
    }

    /// <summary>DeepSeek-R1's published configuration, as the current llama.cpp converter writes it (MLA keys).</summary>
    private static Dictionary<string, GgufValue> DeepSeekR1()
    {
        const string a = "deepseek2";
        return new Dictionary<string, GgufValue>
        {
            [GgufKeys.General.Architecture] = a,
            [GgufKeys.Arch.BlockCount(a)] = 61u,
            [GgufKeys.Arch.ContextLength(a)] = 163840u,
            [GgufKeys.Arch.EmbeddingLength(a)] = 7168u,
            [GgufKeys.Arch.FeedForwardLength(a)] = 18432u,
            [GgufKeys.Arch.AttentionHeadCount(a)] = 128u,
            [GgufKeys.Arch.AttentionHeadCountKv(a)] = 1u,
            [GgufKeys.Arch.RopeFreqBase(a)] = 10000f,
            [GgufKeys.Arch.AttentionLayerNormRmsEpsilon(a)] = 1e-6f,
            [GgufKeys.Arch.ExpertUsedCount(a)] = 8u,
            [GgufKeys.Arch.ExpertCount(a)] = 256u,
            [GgufKeys.Arch.ExpertSharedCount(a)] = 1u,
            [GgufKeys.Arch.ExpertFeedForwardLength(a)] = 2048u,
            [GgufKeys.Arch.LeadingDenseBlockCount(a)] = 3u,
            [GgufKeys.Arch.ExpertWeightsScale(a)] = 2.5f,
            [GgufKeys.Arch.ExpertWeightsNorm(a)] = true,
            [GgufKeys.Arch.ExpertGatingFunc(a)] = 2u,
            [GgufKeys.Arch.ExpertGroupCount(a)] = 8u,
            [GgufKeys.Arch.ExpertGroupUsedCount(a)] = 4u,
            [GgufKeys.Arch.AttentionQLoraRank(a)] = 1536u,
            [GgufKeys.Arch.AttentionKvLoraRank(a)] = 512u,
            [GgufKeys.Arch.AttentionKeyLength(a)] = 576u,
            [GgufKeys.Arch.AttentionValueLength(a)] = 512u,
            [GgufKeys.Arch.AttentionKeyLengthMla(a)] = 192u,
            [GgufKeys.Arch.AttentionValueLengthMla(a)] = 128u,
            [GgufKeys.Arch.RopeDimensionCount(a)] = 64u,
            [GgufKeys.Arch.RopeScalingType(a)] = "yarn",
            [GgufKeys.Arch.RopeScalingFactor(a)] = 40f,
            [GgufKeys.Arch.RopeScalingOriginalContextLength(a)] = 4096u,
            [GgufKeys.Arch.RopeScalingYarnLogMultiplier(a)] = 0.1f,
            [GgufKeys.Arch.VocabSize(a)] = 129280u,
        };
    }

    [Fact]
    public void DeepSeekR1WithMlaKeys()
    {
        ModelHyperparameters hp = ModelHyperparameters.FromMetadata(Metadata(DeepSeekR1()));
        Assert.Equal(ModelArchitecture.DeepSeek2, hp.Architecture);
        Assert.Equal((61, 7168, 128, 1, 18432, 163840, 129280), (hp.BlockCount, hp.EmbeddingLength, hp.HeadCount, hp.HeadCountKv, hp.FeedForwardLength, hp.ContextLength, hp.VocabSize));
        Assert.Equal(new MultiHeadLatentAttention(1536, 512, 128, 64, 128, AbsorbedLayout: true), hp.Mla);
        Assert.Equal(192, hp.Mla!.QkHeadDim);
        Assert.Equal(new MixtureOfExperts(256, 8, 1, 2048, 3, ExpertGatingFunction.Sigmoid, true, 2.5f, 8, 4), hp.Moe);
        Assert.Equal(new RopeParameters(64, 10000f, RopeScalingType.Yarn, 40f, 4096, 0.1f), hp.Rope);
        Assert.Equal(1e-6f, hp.RmsNormEpsilon);
    }

    [Fact]
    public void OlderDeepSeekFilesWithoutMlaKeysAndV2LiteWithoutQLora()
    {
        const string a = "deepseek2";
        GgufMetadata m = With(DeepSeekR1(),
            (GgufKeys.Arch.AttentionKeyLengthMla(a), null), (GgufKeys.Arch.AttentionValueLengthMla(a), null),
            (GgufKeys.Arch.AttentionHeadCountKv(a), 128u), (GgufKeys.Arch.AttentionKeyLength(a), 192u),
            (GgufKeys.Arch.AttentionValueLength(a), 128u), (GgufKeys.Arch.AttentionQLoraRank(a), null),
            (GgufKeys.Arch.ExpertGatingFunc(a), null), (GgufKeys.Arch.ExpertGroupCount(a), null), (GgufKeys.Arch.ExpertGroupUsedCount(a), null));
        ModelHyperparameters hp = ModelHyperparameters.FromMetadata(m);
        Assert.Equal(new MultiHeadLatentAttention(0, 512, 128, 64, 128, AbsorbedLayout: false), hp.Mla);
        Assert.Equal(ExpertGatingFunction.Softmax, hp.Moe!.GatingFunction);
        Assert.Equal((1, 1), (hp.Moe.GroupCount, hp.Moe.GroupUsedCount));
    }

    [Fact]
    public void Qwen2DistillDefaultsFollowLlamaCpp()
    {
        const string a = "qwen2";
        var m = Metadata(new Dictionary<string, GgufValue>
        {
            [GgufKeys.General.Architecture] = a,
            [GgufKeys.Arch.BlockCount(a)] = 28u,
            [GgufKeys.Arch.ContextLength(a)] = 131072u,
            [GgufKeys.Arch.EmbeddingLength(a)] = 1536u,
            [GgufKeys.Arch.FeedForwardLength(a)] = 8960u,
            [GgufKeys.Arch.AttentionHeadCount(a)] = 12u,
            [GgufKeys.Arch.AttentionHeadCountKv(a)] = 2u,
            [GgufKeys.Arch.RopeFreqBase(a)] = 10000f,
            [GgufKeys.Arch.AttentionLayerNormRmsEpsilon(a)] = 1e-6f,
            [GgufKeys.Tokenizer.Tokens] = GgufValue.FromArray(Enumerable.Range(0, 151936).Select(i => "t").ToArray()),
        });
        ModelHyperparameters hp = ModelHyperparameters.FromMetadata(m);
        Assert.Equal(ModelArchitecture.Qwen2, hp.Architecture);
        Assert.Equal((128, 128, 6), (hp.KeyLength, hp.ValueLength, hp.HeadGroupSize));
        Assert.Equal(151936, hp.VocabSize);
        Assert.Equal(new RopeParameters(128, 10000f, RopeScalingType.None, 1f, 0, 0f), hp.Rope);
        Assert.Null(hp.Mla);
        Assert.Null(hp.Moe);
    }

    [Fact]
    public void TinyLlamaAgreesWithLlamaCpp()
    {
        var builder = new TinyLlamaBuilder();
        using GgufFile file = GgufFile.Parse(GgufSamples.Bytes(builder.BuildWriter()), "tiny.gguf");
        ModelHyperparameters hp = ModelHyperparameters.FromMetadata(file.Metadata);

        string dir = GgufSamples.TempDirectory();
        try
        {
            string path = Path.Combine(dir, "tiny.gguf");
            builder.Write(path);
            using LLamaWeights weights = LLamaWeights.LoadFromFile(new ModelParams(path) { GpuLayerCount = 0 });
            Assert.Equal(weights.EmbeddingSize, hp.EmbeddingLength);
            Assert.Equal(weights.ContextSize, hp.ContextLength);
            Assert.Equal(weights.Vocab.Count, hp.VocabSize);
            Assert.Equal(weights.NativeHandle.LayerCount, hp.BlockCount);
            Assert.Equal(weights.NativeHandle.HeadCount, hp.HeadCount);
            Assert.Equal(weights.NativeHandle.KVHeadCount, hp.HeadCountKv);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    public static TheoryData<string, string, string> Inconsistent => new()
    {
        { "unsupported arch", GgufKeys.General.Architecture, "not supported" },
        { "heads not divisible", "deepseek2.attention.head_count_kv", "cannot be shared evenly" },
        { "mla key length", "deepseek2.attention.key_length", "kv_lora_rank + rope" },
        { "more used than experts", "deepseek2.expert_used_count", "only 256 experts" },
        { "dense beyond blocks", "deepseek2.leading_dense_block_count", "only 61 blocks" },
        { "unknown gating", "deepseek2.expert_gating_func", "unknown gating function 3" },
        { "unknown rope scaling", "deepseek2.rope.scaling.type", "unknown RoPE scaling type" },
        { "missing blocks", "deepseek2.block_count", "required key is missing" },
        { "blocks as string", "deepseek2.block_count", "expected an integer" },
        { "zero heads", "deepseek2.attention.head_count", "outside 1.." },
        { "groups uneven", "deepseek2.expert_group_count", "equal groups" },
        { "bad epsilon", "deepseek2.attention.layer_norm_rms_epsilon", "not in (0, 1)" },
    };

    [Theory]
    [MemberData(nameof(Inconsistent))]
    public void InconsistentMetadataIsAClearError(string change, string key, string problem)
    {
        GgufMetadata m = change switch
        {
            "unsupported arch" => With(DeepSeekR1(), (key, "mamba")),
            "heads not divisible" => With(DeepSeekR1(), (key, 3u)),
            "mla key length" => With(DeepSeekR1(), (key, 575u)),
            "more used than experts" => With(DeepSeekR1(), (key, 257u)),
            "dense beyond blocks" => With(DeepSeekR1(), (key, 62u)),
            "unknown gating" => With(DeepSeekR1(), (key, 3u)),
            "unknown rope scaling" => With(DeepSeekR1(), (key, "warp")),
            "missing blocks" => With(DeepSeekR1(), (key, null)),
            "blocks as string" => With(DeepSeekR1(), (key, "61")),
            "zero heads" => With(DeepSeekR1(), (key, 0u)),
            "groups uneven" => With(DeepSeekR1(), (key, 7u)),
            "bad epsilon" => With(DeepSeekR1(), (key, -1f)),
            _ => throw new ArgumentException(change),
        };
        var e = Assert.Throws<GgufFormatException>(() => ModelHyperparameters.FromMetadata(m));
        Assert.Equal(key, e.Field);
        Assert.Contains(problem, e.Problem);
        Assert.StartsWith("model.gguf: ", e.Message);
    }
}
