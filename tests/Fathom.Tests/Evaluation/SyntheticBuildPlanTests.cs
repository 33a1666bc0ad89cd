using Fathom.Evaluation;
using Fathom.Gguf;
using Fathom.Models.Synthesis;
using Fathom.Quants;

namespace Fathom.Tests.Evaluation;

public sealed class SyntheticBuildPlanTests
{
    /// <summary>A hand-sized model: F32 tensors, so every byte count below is worked out by hand.</summary>
    private static ModelBlueprint Handmade(int experts = 0, int used = 0)
    {
        var metadata = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.FromString("deepseek2")),
            new("deepseek2.block_count", GgufValue.FromUInt32(4)),
            new("deepseek2.leading_dense_block_count", GgufValue.FromUInt32(1)),
        };
        if (experts > 0)
        {
            metadata.Add(new("deepseek2.expert_count", GgufValue.FromUInt32((uint)experts)));
            metadata.Add(new("deepseek2.expert_used_count", GgufValue.FromUInt32((uint)used)));
        }
        var tensors = new List<BlueprintTensor>
        {
            new("token_embd.weight", [4, 10], GgmlType.F32),  // 160 B; a token reads one 16-byte row
            new("output.weight", [4, 10], GgmlType.F32),      // 160 B
            new("output_norm.weight", [4], GgmlType.F32),     // 16 B
        };
        for (int i = 0; i < 4; i++)
        {
            tensors.Add(new($"blk.{i}.attn_q.weight", [4, 4], GgmlType.F32));  // 64 B
            if (experts > 0 && i > 0) tensors.Add(new($"blk.{i}.ffn_up_exps.weight", [4, 2, experts], GgmlType.F32)); // 32 B per expert
        }
        return new ModelBlueprint(metadata, tensors);
    }

    [Fact]
    public void ScaleIsBytesOfTheWholeModelOverBytesOfTheBuiltOne()
    {
        ModelBlueprint dense = Handmade();
        // Outside the blocks: 16 + 160 + 16 = 192 B per token; each block 64 B.
        Assert.Equal((192 + 4 * 64) / (192.0 + 64), SyntheticBuildPlan.ScaleFor(dense, 1), 12);
        Assert.Equal((192 + 4 * 64) / (192.0 + 2 * 64), SyntheticBuildPlan.ScaleFor(dense, 2), 12);
        Assert.Equal(1.0, SyntheticBuildPlan.ScaleFor(dense, 4), 12);

        // Routed experts count at used/total: 8 experts of 32 B, 2 used: 64 B per MoE block on top of attn_q.
        ModelBlueprint moe = Handmade(experts: 8, used: 2);
        Assert.Equal((192 + 4 * 64 + 3 * 64) / (192.0 + 64 + 64 + 64), SyntheticBuildPlan.ScaleFor(moe, 2), 12);
        Assert.Throws<ArgumentOutOfRangeException>(() => SyntheticBuildPlan.ScaleFor(moe, 5));

        // Prompt processing pays the non-layer part once per prompt: the layers alone.
        Assert.Equal((4 * 64 + 3 * 64) / (64.0 + 64 + 64), SyntheticBuildPlan.ScaleFor(moe, 2, countNonLayer: false), 12);
    }

    [Fact]
    public void WholeModelIsBuiltWhenItFitsElseLeadingDensePlusMoeLayers()
    {
        ModelBlueprint moe = Handmade(experts: 8, used: 2);
        long full = moe.ByteSize;
        Assert.Equal(4, SyntheticBuildPlan.Choose(moe, full).BuiltLayers);
        Assert.False(SyntheticBuildPlan.Choose(moe, full).IsScaled);

        SyntheticBuildPlan three = SyntheticBuildPlan.Choose(moe, full - 1);
        Assert.Equal(3, three.BuiltLayers);  // 1 dense + 2 MoE
        Assert.True(three.IsScaled);
        Assert.Equal(SyntheticBuildPlan.ScaleFor(moe, 3), three.TimeScale);

        long twoLayers = moe.WithLayers(2).ByteSize;
        Assert.Equal(2, SyntheticBuildPlan.Choose(moe, twoLayers).BuiltLayers);
        var e = Assert.Throws<InsufficientMemoryException>(() => SyntheticBuildPlan.Choose(moe, twoLayers - 1));
        Assert.Contains("not enough memory: even 2 of 4 layers need", e.Message);
    }

    [Fact]
    public void ScaledResultDividesRatesAndKeepsTheRoofline()
    {
        ModelBlueprint moe = Handmade(experts: 8, used: 2);
        SyntheticBuildPlan plan = SyntheticBuildPlan.Choose(moe, moe.WithLayers(2).ByteSize);
        var measured = new BenchmarkResult
        {
            Options = new BenchmarkOptions { BandwidthGBps = 10 },
            PromptProcessing = ThroughputStatistics.From([100, 120, 110]),
            Generation = ThroughputStatistics.From([10, 12, 11]),
            WeightBytesPerToken = 384, // the 2 built layers: 192 outside + 64 + 128
            MappedWeightBytes = moe.WithLayers(2).ByteSize,
            KvCacheBytes = 1,
            PeakWorkingSetBytes = 2,
            WorkingSetBytes = 2,
            GcHeapSizeBytes = 3,
            RooflineFraction = 384 * 11 / 10e9,
        };
        BenchmarkResult scaled = plan.Scale(measured);
        double s = plan.TimeScale, p = plan.PromptTimeScale;
        Assert.Equal((4 * 64 + 3 * 64) / (64.0 + 128), p, 12);
        Assert.Equal(110 / p, scaled.PromptProcessing.Median, 12);
        Assert.Equal(12 / s, scaled.Generation.Max, 12);
        Assert.Equal(192 + 4 * 64 + 3 * 64, scaled.WeightBytesPerToken);
        Assert.Equal(measured.RooflineFraction!.Value, scaled.RooflineFraction!.Value, 12);
        Assert.Equal(measured.PeakWorkingSetBytes, scaled.PeakWorkingSetBytes);
    }

    [Fact]
    public void DefaultBudgetLeavesAMargin()
    {
        Assert.Equal(9L << 30, SyntheticBuildPlan.DefaultBudget(10L << 30));
        Assert.Equal(1L << 30, SyntheticBuildPlan.DefaultBudget(2L << 30));
        Assert.Equal(0, SyntheticBuildPlan.DefaultBudget(1L << 29));
    }

    [Fact]
    public void BandwidthProbeReadsAPlausibleRate()
    {
        double gbps = MemoryBandwidth.Measure(threads: 2, passes: 1);
        Assert.InRange(gbps, 0.1, 10_000);
        Assert.InRange(MemoryBandwidth.BufferBytes(), 256L << 20, 1L << 30);
    }
}
