using Fathom.Quants;

namespace Fathom.Models.Synthesis;

/// <summary>A real model's shapes and weight types, by the name <c>fathom bench --like</c> takes.</summary>
/// <param name="name">The preset name, e.g. <c>deepseek-r1:ud-iq1_s</c>.</param>
/// <param name="description">What the preset mirrors and where its type choices come from.</param>
/// <param name="spec">The synthetic spec (random weights; the tokenizer is a synthetic one of the real vocabulary size).</param>
public sealed class RealModelPreset(string name, string description, SyntheticModelSpec spec)
{
    private ModelBlueprint? _blueprint;

    public string Name { get; } = name;

    public string Description { get; } = description;

    public SyntheticModelSpec Spec { get; } = spec;

    /// <summary>The metadata and tensor table, from which the full size is known without building anything (made once: the vocabulary takes a while).</summary>
    public ModelBlueprint Blueprint() => _blueprint ??= ModelBlueprint.FromSpec(Spec);
}

/// <summary>
/// Presets with the exact shapes of the models users ask about: DeepSeek-R1 (671B) in Unsloth's four dynamic quants,
/// the R1 distills in Q4_K_M, DeepSeek-V2-Lite in Q4_K_M and an Unsloth-style 1.58-bit mix, and DeepSeek-V3's
/// architecture at 8 layers (the shape GPU MoE throughput is compared at) in Q4_K_M and a 1.58-bit mix. Hyperparameters are
/// those of the models' published configs; weights are filled with <see cref="WeightFill.Tiled"/> random rows.
/// </summary>
public static class RealModelPresets
{
    // The shared specs come first: static fields initialize in textual order, and All uses them.
    /// <summary>
    /// What every DeepSeek MLA model here shares (V2-Lite, V3, R1): kv-LoRA 512, 128+64 query/key and 128 value
    /// dimensions per head, RoPE base 10,000 with YaRN ×40 from 4096 positions, a 163,840-token context.
    /// </summary>
    private static readonly SyntheticModelSpec DeepSeekMla = new()
    {
        Architecture = "deepseek2",
        ContextLength = 163_840,
        RopeBase = 10_000f,
        RmsEpsilon = 1e-6f,
        KvLoraRank = 512,
        QkNopeHeadDim = 128,
        QkRopeHeadDim = 64,
        VHeadDim = 128,
        YarnFactor = 40f,
        YarnOriginalContext = 4096,
        Fill = WeightFill.Tiled,
    };

    /// <summary>
    /// DeepSeek-V3's and R1's architecture on top of <see cref="DeepSeekMla"/>: q-LoRA 1536, sigmoid routing with
    /// <c>exp_probs_b</c>, normalized weights scaled by 2.5, 8 expert groups of which 4 are used, V3's vocabulary.
    /// </summary>
    private static readonly SyntheticModelSpec DeepSeekV3Family = DeepSeekMla with
    {
        VocabSize = 129_280,
        QLoraRank = 1536,
        ExpertGatingFunc = 2,
        ExpertWeightsNorm = true,
        ExpertWeightsScale = 2.5f,
        ExpertGroupCount = 8,
        ExpertGroupUsedCount = 4,
        YarnLogMultiplier = 0.1f,
    };

    public static IReadOnlyList<RealModelPreset> All { get; } =
    [
        new("deepseek-r1:ud-iq1_s", "DeepSeek-R1 671B, Unsloth UD-IQ1_S (published 131 GiB): routed experts IQ1_S, their down projections IQ2_XXS in the first 6 MoE layers",
            DeepSeekR1("UD-IQ1_S", GgmlType.IQ1_S, firstDown: GgmlType.IQ2_XXS, restDown: GgmlType.IQ1_S)),
        new("deepseek-r1:ud-iq1_m", "DeepSeek-R1 671B, Unsloth UD-IQ1_M (published 158 GiB): routed experts IQ1_M, down projections IQ2_XXS",
            DeepSeekR1("UD-IQ1_M", GgmlType.IQ1_M, firstDown: GgmlType.IQ2_XXS, restDown: GgmlType.IQ2_XXS)),
        new("deepseek-r1:ud-iq2_xxs", "DeepSeek-R1 671B, Unsloth UD-IQ2_XXS (published 183 GiB): routed experts IQ2_XXS, down projections Q2_K",
            DeepSeekR1("UD-IQ2_XXS", GgmlType.IQ2_XXS, firstDown: GgmlType.Q2_K, restDown: GgmlType.Q2_K)),
        new("deepseek-r1:ud-q2_k_xl", "DeepSeek-R1 671B, Unsloth UD-Q2_K_XL (published 212 GiB): routed experts Q2_K, down projections Q3_K in the first 6 MoE layers",
            DeepSeekR1("UD-Q2_K_XL", GgmlType.Q2_K, firstDown: GgmlType.Q3_K, restDown: GgmlType.Q2_K)),
        new("r1-distill-qwen-1.5b:q4_k_m", "DeepSeek-R1-Distill-Qwen-1.5B, llama.cpp Q4_K_M", DistillQwen("1.5B", 1536, 28, 12, 2, 8960, 151_936, 10_000f)),
        new("r1-distill-qwen-7b:q4_k_m", "DeepSeek-R1-Distill-Qwen-7B, llama.cpp Q4_K_M", DistillQwen("7B", 3584, 28, 28, 4, 18_944, 152_064, 10_000f)),
        new("r1-distill-qwen-14b:q4_k_m", "DeepSeek-R1-Distill-Qwen-14B, llama.cpp Q4_K_M", DistillQwen("14B", 5120, 48, 40, 8, 13_824, 152_064, 1_000_000f)),
        new("r1-distill-qwen-32b:q4_k_m", "DeepSeek-R1-Distill-Qwen-32B, llama.cpp Q4_K_M", DistillQwen("32B", 5120, 64, 40, 8, 27_648, 152_064, 1_000_000f)),
        new("r1-distill-llama-8b:q4_k_m", "DeepSeek-R1-Distill-Llama-8B, llama.cpp Q4_K_M", DistillLlama8B()),
        new("deepseek-v2-lite:q4_k_m", "DeepSeek-V2-Lite 16B, llama.cpp Q4_K_M (1408- and 10944-wide rows fall back to Q5_0/Q8_0)",
            DeepSeekV2Lite("Q4_K_M", Q4KMedium(27))),
        new("deepseek-v2-lite:ud-iq1_s", "DeepSeek-V2-Lite 16B, Unsloth-style mix: routed experts IQ1_S, down projections IQ2_XXS (IQ4_NL: 1408-wide rows), attention Q4_K, shared experts and output Q6_K",
            DeepSeekV2Lite("UD-IQ1_S", SyntheticPresets.UnslothIq1SMix)),
        new("deepseek-v3-8l:q4_k_m", "DeepSeek-V3's architecture at 8 layers (hidden 2048, 64 routed experts of 1536, 6 used, 2 shared), llama.cpp Q4_K_M",
            DeepSeekV3EightLayers("Q4_K_M", Q4KMedium(8))),
        new("deepseek-v3-8l:ud-iq1_s", "DeepSeek-V3's architecture at 8 layers, Unsloth-style mix: routed experts IQ1_S, everything else Q4_K, output Q6_K",
            DeepSeekV3EightLayers("UD-IQ1_S", UnslothV3Mix)),
    ];

    /// <summary>
    /// The mix of the V3-shaped preset: routed experts (gate, up and down) IQ1_S, the output Q6_K, every other matrix
    /// Q4_K (llama.cpp's fallbacks where a row is not whole Q4_K blocks: attn_k_b's 128-value rows become Q5_0).
    /// </summary>
    public static GgmlType? UnslothV3Mix(string name) =>
        name.Contains("_exps", StringComparison.Ordinal) ? GgmlType.IQ1_S : name == "output.weight" ? GgmlType.Q6_K : GgmlType.Q4_K;

    public static bool TryGet(string name, out RealModelPreset preset)
    {
        preset = All.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))!;
        return preset is not null;
    }

    /// <summary>llama.cpp's Q4_K_M mix for a model of <paramref name="layers"/> blocks (<see cref="LlamaCppTypeRules.Q4KMedium"/>).</summary>
    public static Func<string, GgmlType?> Q4KMedium(int layers) => name => LlamaCppTypeRules.Q4KMedium(name, layers);

    /// <summary>
    /// Unsloth's DeepSeek-R1 dynamic quants, from their published recipe (blog "Run DeepSeek R1 Dynamic 1.58-bit",
    /// 2025-01-27): routed experts in the low-bit type, their down projections one step higher in the first MoE layers;
    /// attention and the token embedding Q4_K; the three dense layers, the shared experts and the output Q6_K.
    /// </summary>
    public static Func<string, GgmlType?> UnslothR1Mix(GgmlType routed, GgmlType firstDown, GgmlType restDown, int firstMoeLayer, int higherDownLayers) => name =>
    {
        int layer = BlueprintTensor.LayerOf(name) ?? -1;
        if (name.Contains("ffn_down_exps", StringComparison.Ordinal)) return layer < firstMoeLayer + higherDownLayers ? firstDown : restDown;
        if (name.Contains("_exps", StringComparison.Ordinal)) return routed;
        if (name.Contains("_shexp", StringComparison.Ordinal) || name == "output.weight") return GgmlType.Q6_K;
        if (layer >= 0 && layer < firstMoeLayer && name.Contains(".ffn_", StringComparison.Ordinal)) return GgmlType.Q6_K;
        return GgmlType.Q4_K;
    };

    private static SyntheticModelSpec DeepSeekR1(string quant, GgmlType routed, GgmlType firstDown, GgmlType restDown) => DeepSeekV3Family with
    {
        Name = $"DeepSeek-R1 {quant} (synthetic)",
        HiddenSize = 7168,
        Layers = 61,
        Heads = 128,
        FeedForward = 18_432,
        Experts = 256,
        ExpertsUsed = 8,
        SharedExperts = 1,
        ExpertFeedForward = 2048,
        LeadingDenseBlocks = 3,
        // Unsloth's R1 files (January 2025) carry the fused attn_kv_b, not the later attn_k_b/attn_v_b split.
        SplitKvB = false,
        TypeFor = UnslothR1Mix(routed, firstDown, restDown, firstMoeLayer: 3, higherDownLayers: 6),
    };

    private static SyntheticModelSpec DeepSeekV2Lite(string quant, Func<string, GgmlType?> types) => DeepSeekMla with
    {
        Name = $"DeepSeek-V2-Lite {quant} (synthetic)",
        VocabSize = 102_400,
        HiddenSize = 2048,
        Layers = 27,
        Heads = 16,
        FeedForward = 10_944,
        QLoraRank = 0,
        Experts = 64,
        ExpertsUsed = 6,
        SharedExperts = 2,
        ExpertFeedForward = 1408,
        LeadingDenseBlocks = 1,
        ExpertGatingFunc = 1,
        ExpertWeightsNorm = false,
        ExpertWeightsScale = 1f,
        // As the published V2-Lite GGUFs: the fused attn_kv_b.
        SplitKvB = false,
        YarnLogMultiplier = 0.0707f,
        TypeFor = types,
    };

    /// <summary>
    /// DeepSeek-V3's architecture (<see cref="DeepSeekV3Family"/>, with the split attn_k_b/attn_v_b of current
    /// conversions) at the size the issue names: 8 layers of hidden 2048 and 16 heads, the first dense with FFN 11008,
    /// then 64 routed experts of FFN 1536 (6 used) and 2 shared.
    /// </summary>
    private static SyntheticModelSpec DeepSeekV3EightLayers(string quant, Func<string, GgmlType?> types) => DeepSeekV3Family with
    {
        Name = $"DeepSeek-V3 8-layer {quant} (synthetic)",
        HiddenSize = 2048,
        Layers = 8,
        Heads = 16,
        FeedForward = 11_008,
        Experts = 64,
        ExpertsUsed = 6,
        SharedExperts = 2,
        ExpertFeedForward = 1536,
        LeadingDenseBlocks = 1,
        SplitKvB = true,
        TypeFor = types,
    };

    private static SyntheticModelSpec DistillQwen(string size, int hidden, int layers, int heads, int kvHeads, int ffn, int vocab, float ropeBase) => new()
    {
        Architecture = "qwen2",
        Name = $"DeepSeek-R1-Distill-Qwen-{size} Q4_K_M (synthetic)",
        VocabSize = vocab,
        HiddenSize = hidden,
        Layers = layers,
        Heads = heads,
        KvHeads = kvHeads,
        FeedForward = ffn,
        ContextLength = 131_072,
        RopeBase = ropeBase,
        RmsEpsilon = 1e-6f,
        TypeFor = Q4KMedium(layers),
        Fill = WeightFill.Tiled,
    };

    private static SyntheticModelSpec DistillLlama8B() => new()
    {
        Architecture = "llama",
        Name = "DeepSeek-R1-Distill-Llama-8B Q4_K_M (synthetic)",
        VocabSize = 128_256,
        HiddenSize = 4096,
        Layers = 32,
        Heads = 32,
        KvHeads = 8,
        FeedForward = 14_336,
        ContextLength = 131_072,
        RopeBase = 500_000f,
        RmsEpsilon = 1e-5f,
        Llama3RopeFactor = 8f,
        TypeFor = Q4KMedium(32),
        Fill = WeightFill.Tiled,
    };
}
