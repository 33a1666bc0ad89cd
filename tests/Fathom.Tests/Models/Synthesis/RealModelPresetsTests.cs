using Fathom.Gguf;
using Fathom.Models.Synthesis;
using Fathom.Quants;

namespace Fathom.Tests.Models.Synthesis;

/// <summary>Sizes and tensor counts checked against the published files (Hugging Face file sizes, llama.cpp load logs).</summary>
public sealed class RealModelPresetsTests
{
    private static ModelBlueprint Blueprint(string name)
    {
        Assert.True(RealModelPresets.TryGet(name, out RealModelPreset preset), name);
        return preset.Blueprint();
    }

    [Theory]
    [InlineData("deepseek-r1:ud-iq1_s", 131.0 * (1L << 30))]          // Unsloth: 131 GB (GiB) for UD-IQ1_S
    [InlineData("deepseek-r1:ud-q2_k_xl", 212.0 * (1L << 30))]        // Unsloth: 212 GB (GiB) for UD-Q2_K_XL
    [InlineData("r1-distill-qwen-1.5b:q4_k_m", 1.12e9)]
    [InlineData("r1-distill-qwen-7b:q4_k_m", 4.68e9)]
    [InlineData("r1-distill-llama-8b:q4_k_m", 4.92e9)]
    [InlineData("deepseek-v2-lite:q4_k_m", 10.36e9)]
    public void FullSizeMatchesThePublishedFileWithoutBuildingIt(string name, double publishedBytes)
    {
        long bytes = Blueprint(name).ByteSize;
        Assert.InRange(bytes / publishedBytes, 0.98, 1.02);
    }

    [Fact]
    public void R1HasTheShapesOfTheReleasedModel()
    {
        ModelBlueprint r1 = Blueprint("deepseek-r1:ud-iq1_s");
        // llama.cpp's load log of Unsloth's R1 files: 1025 tensors, 361 of them F32 (norms, routers, expert biases).
        Assert.Equal(1025, r1.Tensors.Count);
        Assert.Equal(361, r1.Tensors.Count(t => t.Type == GgmlType.F32));
        Assert.Equal(61, r1.Layers);
        Assert.Equal(3, r1.LeadingDenseLayers);
        var shapes = r1.Tensors.ToDictionary(t => t.Name, t => string.Join("x", t.Shape));
        Assert.Equal("7168x129280", shapes["token_embd.weight"]);
        Assert.Equal("7168x1536", shapes["blk.0.attn_q_a.weight"]);
        Assert.Equal("1536x24576", shapes["blk.0.attn_q_b.weight"]);   // 128 heads × (128 nope + 64 rope)
        Assert.Equal("7168x576", shapes["blk.0.attn_kv_a_mqa.weight"]); // 512 latent + 64 rope
        Assert.Equal("512x32768", shapes["blk.0.attn_kv_b.weight"]);    // 128 heads × (128 nope + 128 v)
        Assert.Equal("7168x18432", shapes["blk.2.ffn_gate.weight"]);
        Assert.Equal("7168x2048x256", shapes["blk.3.ffn_gate_exps.weight"]);
        Assert.Equal("2048x7168x256", shapes["blk.60.ffn_down_exps.weight"]);
        Assert.Equal("7168x2048", shapes["blk.3.ffn_up_shexp.weight"]);
        Assert.Equal("7168x256", shapes["blk.3.ffn_gate_inp.weight"]);
        var types = r1.Tensors.ToDictionary(t => t.Name, t => t.Type);
        Assert.Equal(GgmlType.IQ2_XXS, types["blk.8.ffn_down_exps.weight"]);
        Assert.Equal(GgmlType.IQ1_S, types["blk.9.ffn_down_exps.weight"]);
        Assert.Equal(GgmlType.IQ1_S, types["blk.3.ffn_up_exps.weight"]);
        Assert.Equal(GgmlType.Q6_K, types["blk.3.ffn_down_shexp.weight"]);
        Assert.Equal(GgmlType.Q4_K, types["blk.10.attn_output.weight"]);
    }

    /// <summary>The issue's V3-shaped model: its sizes, V3's routing and attention metadata, and the two weight mixes.</summary>
    [Fact]
    public void V3EightLayersHasTheIssuesShapeAndV3Metadata()
    {
        ModelBlueprint q4 = Blueprint("deepseek-v3-8l:q4_k_m"), iq1 = Blueprint("deepseek-v3-8l:ud-iq1_s");
        const string a = "deepseek2";
        Assert.Equal(8, q4.Layers);
        Assert.Equal(1, q4.LeadingDenseLayers);
        Assert.Equal(64, q4.ExpertCount);
        Assert.Equal(6, q4.ExpertUsedCount);
        Assert.Equal(2u, q4[GgufKeys.Arch.ExpertSharedCount(a)].AsUInt32());
        Assert.Equal(2u, q4[GgufKeys.Arch.ExpertGatingFunc(a)].AsUInt32()); // sigmoid
        Assert.Equal(8u, q4[GgufKeys.Arch.ExpertGroupCount(a)].AsUInt32());
        Assert.Equal(4u, q4[GgufKeys.Arch.ExpertGroupUsedCount(a)].AsUInt32());
        Assert.Equal(2.5f, q4[GgufKeys.Arch.ExpertWeightsScale(a)].AsFloat());
        Assert.True(q4[GgufKeys.Arch.ExpertWeightsNorm(a)].AsBool());
        Assert.Equal(1536u, q4[GgufKeys.Arch.AttentionQLoraRank(a)].AsUInt32());
        Assert.Equal(512u, q4[GgufKeys.Arch.AttentionKvLoraRank(a)].AsUInt32());
        Assert.Equal(40f, q4[GgufKeys.Arch.RopeScalingFactor(a)].AsFloat());
        Assert.Equal(4096u, q4[GgufKeys.Arch.RopeScalingOriginalContextLength(a)].AsUInt32());
        var shapes = q4.Tensors.ToDictionary(t => t.Name, t => string.Join("x", t.Shape));
        Assert.Equal("2048x129280", shapes["token_embd.weight"]);
        Assert.Equal("2048x1536", shapes["blk.0.attn_q_a.weight"]);
        Assert.Equal("1536x3072", shapes["blk.0.attn_q_b.weight"]);     // 16 heads × (128 nope + 64 rope)
        Assert.Equal("2048x576", shapes["blk.0.attn_kv_a_mqa.weight"]);  // 512 latent + 64 rope
        Assert.Equal("128x512x16", shapes["blk.0.attn_k_b.weight"]);
        Assert.Equal("512x128x16", shapes["blk.0.attn_v_b.weight"]);
        Assert.Equal("2048x11008", shapes["blk.0.ffn_gate.weight"]);
        Assert.Equal("2048x1536x64", shapes["blk.1.ffn_gate_exps.weight"]);
        Assert.Equal("1536x2048x64", shapes["blk.7.ffn_down_exps.weight"]);
        Assert.Equal("2048x3072", shapes["blk.1.ffn_up_shexp.weight"]);   // 2 shared experts of 1536
        Assert.Equal("64", shapes["blk.1.exp_probs_b.bias"]);
        Assert.False(shapes.ContainsKey("blk.0.exp_probs_b.bias"));
        var q4Types = q4.Tensors.ToDictionary(t => t.Name, t => t.Type);
        Assert.Equal(GgmlType.Q4_K, q4Types["blk.1.ffn_gate_exps.weight"]);
        Assert.Equal(GgmlType.Q6_K, q4Types["blk.7.ffn_down_exps.weight"]); // the last layer takes more bits
        Assert.Equal(GgmlType.Q6_K, q4Types["output.weight"]);
        var iq1Types = iq1.Tensors.ToDictionary(t => t.Name, t => t.Type);
        Assert.Equal(GgmlType.IQ1_S, iq1Types["blk.3.ffn_down_exps.weight"]);
        Assert.Equal(GgmlType.IQ1_S, iq1Types["blk.3.ffn_up_exps.weight"]);
        Assert.Equal(GgmlType.Q4_K, iq1Types["blk.3.ffn_down_shexp.weight"]);
        Assert.Equal(GgmlType.Q4_K, iq1Types["blk.0.ffn_down.weight"]);
        Assert.Equal(GgmlType.Q5_0, iq1Types["blk.0.attn_k_b.weight"]); // 128-value rows: llama.cpp's Q4_K fallback
        Assert.Equal(GgmlType.Q6_K, iq1Types["output.weight"]);
        Assert.True(iq1.ByteSize < q4.ByteSize / 2, $"{iq1.ByteSize} vs {q4.ByteSize}");
    }

    [Fact]
    public void SmallDistillHasTheIssuesShape()
    {
        ModelBlueprint qwen = Blueprint("r1-distill-qwen-1.5b:q4_k_m");
        var shapes = qwen.Tensors.ToDictionary(t => t.Name, t => string.Join("x", t.Shape));
        Assert.Equal(28, qwen.Layers);
        Assert.Equal("1536x151936", shapes["token_embd.weight"]);
        Assert.Equal("1536x256", shapes["blk.0.attn_k.weight"]);  // 2 KV heads of 128
        Assert.Equal("8960x1536", shapes["blk.27.ffn_down.weight"]);
    }

    [Fact]
    public void NamesAreFoundIgnoringCase()
    {
        Assert.True(RealModelPresets.TryGet("DeepSeek-R1:UD-IQ1_S", out _));
        Assert.False(RealModelPresets.TryGet("deepseek-r1", out _));
        Assert.Equal(RealModelPresets.All.Count, RealModelPresets.All.Select(p => p.Name).Distinct().Count());
    }
}
