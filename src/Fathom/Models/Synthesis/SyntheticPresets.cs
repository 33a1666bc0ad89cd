using Fathom.Quants;

namespace Fathom.Models.Synthesis;

/// <summary>Ready-made synthetic model shapes.</summary>
public static class SyntheticPresets
{
    /// <summary>
    /// Unsloth's dynamic 1.58-bit recipe for DeepSeek-R1: routed experts IQ1_S with IQ2_XXS down projections,
    /// attention and dense layers Q4_K, shared experts and the output Q6_K; norms and the router stay F32.
    /// </summary>
    public static GgmlType? UnslothIq1SMix(string tensorName) => tensorName switch
    {
        _ when tensorName.Contains("ffn_down_exps") => GgmlType.IQ2_XXS,
        _ when tensorName.Contains("_exps") => GgmlType.IQ1_S,
        _ when tensorName.Contains("_shexp") => GgmlType.Q6_K,
        "output.weight" => GgmlType.Q6_K,
        _ => GgmlType.Q4_K,
    };

    /// <summary>
    /// A tiny model with DeepSeek-R1's architecture (q-LoRA, MLA with the split k_b/v_b layout, sigmoid routing with
    /// expert groups, shared experts, a leading dense layer, YaRN) and its 1.58-bit weight mix; a few MB.
    /// </summary>
    public static SyntheticModelSpec TinyDeepSeekR1 => new()
    {
        Architecture = "deepseek2",
        Name = "tiny-deepseek-r1 (synthetic)",
        VocabSize = 1024,
        HiddenSize = 256,
        Layers = 3,
        Heads = 4,
        FeedForward = 512,
        ContextLength = 4096,
        QLoraRank = 256,
        KvLoraRank = 256,
        QkNopeHeadDim = 32,
        QkRopeHeadDim = 32,
        VHeadDim = 32,
        Experts = 8,
        ExpertsUsed = 2,
        SharedExperts = 1,
        ExpertFeedForward = 256,
        LeadingDenseBlocks = 1,
        ExpertGatingFunc = 2,
        ExpertWeightsNorm = true,
        ExpertWeightsScale = 2.5f,
        ExpertGroupCount = 4,
        ExpertGroupUsedCount = 2,
        YarnFactor = 4f,
        YarnOriginalContext = 1024,
        YarnLogMultiplier = 0.1f,
        RopeBase = 10000f,
        TypeFor = UnslothIq1SMix,
        WeightScale = 2f,
    };
}
