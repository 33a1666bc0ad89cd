using Fathom.Models;

namespace Fathom.Tests.Models;

public sealed class TensorGroupsTests
{
    [Theory]
    [InlineData("token_embd.weight", TensorGroup.Embeddings)]
    [InlineData("output.weight", TensorGroup.Output)]
    [InlineData("output_norm.weight", TensorGroup.RouterAndNorms)]
    [InlineData("rope_freqs.weight", TensorGroup.Attention)]
    [InlineData("blk.0.attn_norm.weight", TensorGroup.RouterAndNorms)]
    [InlineData("blk.0.ffn_norm.weight", TensorGroup.RouterAndNorms)]
    [InlineData("blk.12.attn_q.weight", TensorGroup.Attention)]
    [InlineData("blk.12.attn_q.bias", TensorGroup.Attention)]
    [InlineData("blk.3.attn_k.weight", TensorGroup.Attention)]
    [InlineData("blk.3.attn_v.weight", TensorGroup.Attention)]
    [InlineData("blk.3.attn_output.weight", TensorGroup.Attention)]
    [InlineData("blk.3.attn_q_a.weight", TensorGroup.Attention)]
    [InlineData("blk.3.attn_q_a_norm.weight", TensorGroup.RouterAndNorms)]
    [InlineData("blk.3.attn_q_b.weight", TensorGroup.Attention)]
    [InlineData("blk.3.attn_kv_a_mqa.weight", TensorGroup.Attention)]
    [InlineData("blk.3.attn_kv_a_norm.weight", TensorGroup.RouterAndNorms)]
    [InlineData("blk.3.attn_kv_b.weight", TensorGroup.Attention)]
    [InlineData("blk.3.attn_k_b.weight", TensorGroup.Attention)]
    [InlineData("blk.3.attn_v_b.weight", TensorGroup.Attention)]
    [InlineData("blk.0.ffn_gate.weight", TensorGroup.DenseFeedForward)]
    [InlineData("blk.0.ffn_up.weight", TensorGroup.DenseFeedForward)]
    [InlineData("blk.0.ffn_down.weight", TensorGroup.DenseFeedForward)]
    [InlineData("blk.5.ffn_gate_exps.weight", TensorGroup.RoutedExperts)]
    [InlineData("blk.5.ffn_up_exps.weight", TensorGroup.RoutedExperts)]
    [InlineData("blk.5.ffn_down_exps.weight", TensorGroup.RoutedExperts)]
    [InlineData("blk.5.ffn_gate_shexp.weight", TensorGroup.SharedExperts)]
    [InlineData("blk.5.ffn_up_shexp.weight", TensorGroup.SharedExperts)]
    [InlineData("blk.5.ffn_down_shexp.weight", TensorGroup.SharedExperts)]
    [InlineData("blk.5.ffn_gate_inp.weight", TensorGroup.RouterAndNorms)]
    [InlineData("blk.5.exp_probs_b.bias", TensorGroup.RouterAndNorms)]
    [InlineData("blk.61.nextn.eh_proj.weight", TensorGroup.Other)]
    [InlineData("blk.x.attn_q.weight", TensorGroup.Other)]
    [InlineData("something_else", TensorGroup.Other)]
    public void LlamaCppNamesFallIntoTheirGroups(string name, TensorGroup group) => Assert.Equal(group, TensorGroups.Classify(name));

    [Fact]
    public void BlockIndexIsParsed()
    {
        Assert.True(TensorGroups.TryParseBlock("blk.60.ffn_up_exps.weight", out int block, out string rest));
        Assert.Equal((60, "ffn_up_exps.weight"), (block, rest));
        Assert.False(TensorGroups.TryParseBlock("output.weight", out _, out _));
        Assert.False(TensorGroups.TryParseBlock("blk.-1.attn_q.weight", out _, out _));
    }
}
