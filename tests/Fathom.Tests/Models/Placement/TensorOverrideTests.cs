using Fathom.Models.Placement;

namespace Fathom.Tests.Models.Placement;

public sealed class TensorOverrideTests
{
    [Fact]
    public void ParsesCommaSeparatedRulesInOrderWithDevicesInAnyCase()
    {
        IReadOnlyList<TensorOverride> rules = TensorOverride.ParseList(@"blk\.0\.ffn_up_exps=CUDA0,exps=cpu,attn=Cpu");
        Assert.Equal(3, rules.Count);
        Assert.Equal((@"blk\.0\.ffn_up_exps", PlacementDevice.Gpu), (rules[0].Pattern.ToString(), rules[0].Device));
        Assert.Equal(("exps", PlacementDevice.Cpu), (rules[1].Pattern.ToString(), rules[1].Device));
        Assert.Equal(PlacementDevice.Cpu, rules[2].Device);
        // A pattern is searched for, as llama.cpp's std::regex_search does, not matched against the whole name.
        Assert.Matches(rules[1].Pattern, "blk.3.ffn_down_exps.weight");
    }

    [Fact]
    public void APatternMayContainAnEqualsSign()
    {
        TensorOverride rule = Assert.Single(TensorOverride.ParseList("attn_(?=q)=cpu"));
        Assert.Equal("attn_(?=q)", rule.Pattern.ToString());
        Assert.Matches(rule.Pattern, "blk.0.attn_q_a.weight");
        Assert.DoesNotMatch(rule.Pattern, "blk.0.attn_kv_a_mqa.weight");
    }

    [Theory]
    [InlineData("exps", "no '='")]
    [InlineData("=cpu", "no tensor name pattern")]
    [InlineData("ffn_(up=cpu", "is not a regular expression")]
    [InlineData("exps=cuda1", "unknown device 'cuda1'; available: cpu, cuda0")]
    [InlineData("exps=cpu,attn", "rule 'attn' has no '='")]
    public void BadRulesAreClearErrors(string value, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => TensorOverride.ParseList(value));
        Assert.Contains(message, e.Message);
    }
}
