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
