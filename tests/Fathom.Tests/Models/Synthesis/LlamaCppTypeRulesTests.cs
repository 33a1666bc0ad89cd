using Fathom.Models.Synthesis;
using Fathom.Quants;

namespace Fathom.Tests.Models.Synthesis;

/// <summary>Expected types are llama.cpp's (<c>llama_tensor_get_type</c> in src/llama-quant.cpp) and counts from published files' load logs.</summary>
public sealed class LlamaCppTypeRulesTests
{
    [Theory]
    [InlineData(GgmlType.IQ1_S, 1408, GgmlType.IQ4_NL)]
    [InlineData(GgmlType.IQ1_M, 1408, GgmlType.IQ4_NL)]
    [InlineData(GgmlType.IQ2_XXS, 1408, GgmlType.IQ4_NL)]
    [InlineData(GgmlType.Q2_K, 1408, GgmlType.IQ4_NL)]
    [InlineData(GgmlType.IQ4_XS, 1408, GgmlType.IQ4_NL)]
    [InlineData(GgmlType.Q4_K, 1408, GgmlType.Q5_0)]
    [InlineData(GgmlType.Q4_K, 10944, GgmlType.Q5_0)]
    [InlineData(GgmlType.Q5_K, 1408, GgmlType.Q5_1)]
    [InlineData(GgmlType.Q6_K, 1408, GgmlType.Q8_0)]
    [InlineData(GgmlType.TQ1_0, 1408, GgmlType.Q4_0)]
    [InlineData(GgmlType.TQ2_0, 1408, GgmlType.Q4_0)]
    [InlineData(GgmlType.Q6_K, 100, GgmlType.F16)]
    [InlineData(GgmlType.IQ1_S, 2048, GgmlType.IQ1_S)]
    [InlineData(GgmlType.Q4_K, 2816, GgmlType.Q4_K)]
    [InlineData(GgmlType.Q8_0, 1408, GgmlType.Q8_0)]
    public void RowsThatAreNotWholeBlocksFallBackAsLlamaCppDoes(GgmlType wanted, long row, GgmlType expected) =>
        Assert.Equal(expected, LlamaCppTypeRules.FitToRow(wanted, row));

    [Fact]
    public void TypesWithoutAFallbackAreRefused() =>
        Assert.Throws<ArgumentException>(() => LlamaCppTypeRules.FitToRow(GgmlType.Q4_0, 100));

    [Fact]
    public void Q4KMediumGivesQ6KToAboutHalfTheAttnVAndFfnDownLayers()
    {
        // use_more_bits for 28 layers: the first 3, the last 4 (from 24) and every third from 5: 14 layers.
        int[] more = [.. Enumerable.Range(0, 28).Where(i => LlamaCppTypeRules.UseMoreBits(i, 28))];
        Assert.Equal([0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27], more);
        Assert.Equal(GgmlType.Q6_K, LlamaCppTypeRules.Q4KMedium("blk.5.attn_v.weight", 28));
        Assert.Equal(GgmlType.Q4_K, LlamaCppTypeRules.Q4KMedium("blk.6.attn_v.weight", 28));
        Assert.Equal(GgmlType.Q6_K, LlamaCppTypeRules.Q4KMedium("blk.26.ffn_down_exps.weight", 27));
        Assert.Equal(GgmlType.Q4_K, LlamaCppTypeRules.Q4KMedium("blk.6.ffn_down_shexp.weight", 27));
        Assert.Equal(GgmlType.Q4_K, LlamaCppTypeRules.Q4KMedium("blk.5.attn_kv_b.weight", 27));
        Assert.Equal(GgmlType.Q6_K, LlamaCppTypeRules.Q4KMedium("output.weight", 28));
        Assert.Equal(GgmlType.Q4_K, LlamaCppTypeRules.Q4KMedium("token_embd.weight", 28));
    }

    [Fact]
    public void DistillQwen15BQ4KMHasThePublishedFilesTypeCounts()
    {
        // llama.cpp's load log of DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf: f32 141, q4_K 169, q6_K 29 tensors.
        RealModelPresets.TryGet("r1-distill-qwen-1.5b:q4_k_m", out RealModelPreset preset);
        var counts = preset.Blueprint().Tensors.GroupBy(t => t.Type).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(141, counts[GgmlType.F32]);
        Assert.Equal(169, counts[GgmlType.Q4_K]);
        Assert.Equal(29, counts[GgmlType.Q6_K]);
        Assert.Equal(3, counts.Count);
    }

    [Fact]
    public void V2LiteMixesFallBackOnTheirNarrowRows()
    {
        RealModelPresets.TryGet("deepseek-v2-lite:ud-iq1_s", out RealModelPreset unsloth);
        var types = unsloth.Blueprint().Tensors.ToDictionary(t => t.Name, t => t.Type);
        Assert.Equal(GgmlType.IQ1_S, types["blk.1.ffn_gate_exps.weight"]);
        Assert.Equal(GgmlType.IQ1_S, types["blk.1.ffn_up_exps.weight"]);
        Assert.Equal(GgmlType.IQ4_NL, types["blk.1.ffn_down_exps.weight"]);  // IQ2_XXS wanted, rows of 1408
        Assert.Equal(GgmlType.Q6_K, types["blk.1.ffn_down_shexp.weight"]);   // rows of 2 × 1408 = 2816 = 11 blocks
        Assert.Equal(GgmlType.Q5_0, types["blk.0.ffn_down.weight"]);         // Q4_K wanted, rows of 10944
        Assert.Equal(GgmlType.Q4_K, types["blk.3.attn_q.weight"]);
        Assert.Equal(GgmlType.Q6_K, types["output.weight"]);

        RealModelPresets.TryGet("deepseek-v2-lite:q4_k_m", out RealModelPreset q4km);
        types = q4km.Blueprint().Tensors.ToDictionary(t => t.Name, t => t.Type);
        Assert.Equal(GgmlType.Q8_0, types["blk.2.ffn_down_exps.weight"]);  // more-bits layer: Q6_K wanted
        Assert.Equal(GgmlType.Q5_0, types["blk.3.ffn_down_exps.weight"]);  // Q4_K wanted
        Assert.Equal(GgmlType.Q4_K, types["blk.3.ffn_gate_exps.weight"]);
    }
}
