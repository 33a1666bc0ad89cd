using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Placement;
using Fathom.Models.Synthesis;
using Fathom.Quants;

namespace Fathom.Tests.Models.Placement;

/// <summary>A tiny DeepSeek-R1-shaped file (3 blocks: one dense, two MoE; the fused attn_kv_b layout), made once.</summary>
public sealed class TinyDeepSeekFile : IDisposable
{
    // Q8_0 and F32 weights: quick to write, and the plan depends only on names and sizes.
    private readonly string _path = ModelTestKit.Synthesize(SyntheticPresets.TinyDeepSeekR1 with { SplitKvB = false, TypeFor = null, DefaultType = GgmlType.Q8_0 });

    public TinyDeepSeekFile()
    {
        File = GgufFile.Open(_path);
        Config = ModelHyperparameters.FromMetadata(File.Metadata);
    }

    public GgufFile File { get; }
    public ModelHyperparameters Config { get; }

    public void Dispose()
    {
        File.Dispose();
        System.IO.File.Delete(_path);
    }
}

/// <summary>
/// Placement plans for a tiny DeepSeek-R1-shaped file. Expected bytes are summed from the file's own tensor list by
/// name, independently of the planner.
/// </summary>
public sealed class PlacementPlannerTests(TinyDeepSeekFile model) : IClassFixture<TinyDeepSeekFile>
{
    private readonly GgufFile _file = model.File;
    private readonly ModelHyperparameters _config = model.Config;

    private PlacementPlan Plan(PlacementOptions options, long? free = null) => PlacementPlanner.Plan(_file, _config, options, free);

    private static HashSet<string> OnCpu(PlacementPlan plan) => [.. plan.Tensors.Where(t => t.Device == PlacementDevice.Cpu).Select(t => t.Name)];

    private IEnumerable<GgufTensorInfo> Matrices => _file.Tensors.Where(t => t.Shape.Length >= 2);

    private long Bytes(Func<string, bool> which) => _file.Tensors.Where(t => which(t.Name)).Sum(t => t.ByteSize);

    private static bool IsExpert(string name) => name.Contains("_exps.");

    [Fact]
    public void ByDefaultEveryTensorIsOnTheGpu()
    {
        PlacementPlan plan = Plan(new PlacementOptions());
        Assert.False(plan.HasCpuWeights);
        Assert.Equal(0, plan.CpuWeightBytes);
        Assert.Equal(Bytes(_ => true), plan.GpuWeightBytes); // the fused attn_kv_b too: no float copy of its key rows
        Assert.Equal("all on the GPU", plan.Choice);
    }

    [Fact]
    public void CpuMoeKeepsExactlyTheRoutedExpertsOnTheCpu()
    {
        PlacementPlan plan = Plan(new PlacementOptions { CpuMoe = true });
        Assert.Equal(Matrices.Where(t => IsExpert(t.Name)).Select(t => t.Name).ToHashSet(), OnCpu(plan));
        Assert.Equal(6, OnCpu(plan).Count); // gate, up and down of the two MoE blocks
        Assert.Equal(Bytes(IsExpert), plan.CpuWeightBytes);
        PlacementPart experts = Assert.Single(plan.Parts, p => p.Group == TensorGroup.RoutedExperts);
        Assert.Equal((0, Bytes(IsExpert)), (experts.GpuBytes, experts.CpuBytes));
    }

    [Fact]
    public void NCpuMoeKeepsTheFirstBlocksExperts()
    {
        Assert.Equal(["blk.1.ffn_down_exps.weight", "blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight"],
            OnCpu(Plan(new PlacementOptions { CpuMoeLayers = 2 })).Order());
        Assert.Empty(OnCpu(Plan(new PlacementOptions { CpuMoeLayers = 1 }))); // block 0 is dense
    }

    [Fact]
    public void GpuLayersCountBackFromTheOutputLayerAsLlamaCppDoes()
    {
        HashSet<string> Blocks(params int[] blocks) => [.. Matrices.Where(t => blocks.Any(b => t.Name.StartsWith($"blk.{b}."))).Select(t => t.Name)];
        // The layers are blocks 0..2 and the output layer (with the token embedding) as layer 3; -ngl N puts the last N on the GPU.
        Assert.Equal(Blocks(0, 1, 2), OnCpu(Plan(new PlacementOptions { GpuLayers = 1 })));
        Assert.Equal(Blocks(0, 1), OnCpu(Plan(new PlacementOptions { GpuLayers = 2 })));
        Assert.Equal(Blocks(0), OnCpu(Plan(new PlacementOptions { GpuLayers = 3 })));
        Assert.Empty(OnCpu(Plan(new PlacementOptions { GpuLayers = 4 })));
        Assert.Empty(OnCpu(Plan(new PlacementOptions { GpuLayers = 99 })));
        // -ngl 0: every matrix on the CPU; vectors (norms, biases) stay with the activations on the GPU.
        PlacementPlan none = Plan(new PlacementOptions { GpuLayers = 0 });
        Assert.Equal(Matrices.Select(t => t.Name).ToHashSet(), OnCpu(none));
        Assert.Equal(Bytes(n => _file.Tensors.Single(t => t.Name == n).Shape.Length == 1), none.GpuWeightBytes);
    }

    [Fact]
    public void OverridesComeFirstAndTheFirstMatchingRuleWins()
    {
        PlacementPlan plan = Plan(new PlacementOptions
        {
            CpuMoe = true,
            GpuLayers = 99,
            Overrides = TensorOverride.ParseList(@"blk\.2\.ffn_up_exps=cuda0,blk\.2\.=cpu,attn_kv_b=cpu"),
        });
        HashSet<string> cpu = OnCpu(plan);
        Assert.DoesNotContain("blk.2.ffn_up_exps.weight", cpu); // the first rule beats both the second and --cpu-moe
        Assert.Contains("blk.2.attn_q_a.weight", cpu);
        Assert.Contains("blk.1.ffn_up_exps.weight", cpu); // --cpu-moe
        Assert.Contains("blk.0.attn_kv_b.weight", cpu);
        Assert.DoesNotContain("blk.0.attn_q_a.weight", cpu);
        Assert.Equal(Bytes(_ => true) - plan.CpuWeightBytes, plan.GpuWeightBytes);
    }

    [Theory]
    [InlineData("blk.1.ffn_up_exps.weight[5]", PlacementDevice.Cpu)]
    [InlineData("blk.1.ffn_up_exps.weight", PlacementDevice.Cpu)]
    [InlineData("blk.0.attn_kv_b.weight.k[2]", PlacementDevice.Cpu)]
    [InlineData("blk.2.ffn_up_exps.weight[0]", PlacementDevice.Gpu)]
    [InlineData("made-in-a-test", PlacementDevice.Gpu)]
    public void WeightsCutFromATensorResolveToIt(string weightName, PlacementDevice expected)
    {
        PlacementPlan plan = Plan(new PlacementOptions { Overrides = TensorOverride.ParseList(@"blk\.1\.ffn_up_exps=cpu,attn_kv_b=cpu") });
        Assert.Equal(expected, plan.DeviceOf(weightName));
    }

    [Fact]
    public void LookingUpAWeightAllocatesNothing()
    {
        PlacementPlan plan = Plan(new PlacementOptions { CpuMoe = true });
        string[] names = ["blk.1.ffn_up_exps.weight[5]", "blk.0.attn_kv_b.weight.k[2]", "blk.2.attn_q_a.weight", "made-in-a-test"];
        foreach (string name in names) plan.DeviceOf(name); // first calls may initialize the lookup
        long before = GC.GetAllocatedBytesForCurrentThread();
        int onCpu = 0;
        for (int i = 0; i < 1000; i++)
            foreach (string name in names)
                if (plan.DeviceOf(name) == PlacementDevice.Cpu) onCpu++;
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(1000, onCpu);
    }

    [Fact]
    public void FitPutsEverythingOnTheGpuWhenItFits()
    {
        var options = new PlacementOptions { Fit = true, ContextSize = 256, FitTargetBytes = 1 << 20 };
        DeviceMemoryReserve reserve = DeviceMemoryReserve.For(_config, 256);
        long all = Bytes(_ => true);
        PlacementPlan plan = Plan(options, free: all + reserve.Bytes + options.FitTargetBytes);
        Assert.False(plan.HasCpuWeights);
        Assert.Contains("as everything on the GPU", plan.Choice);
    }

    [Fact]
    public void FitMovesRoutedExpertsOfTheFirstBlocksToTheCpuFirst()
    {
        var options = new PlacementOptions { Fit = true, ContextSize = 256, FitTargetBytes = 0 };
        DeviceMemoryReserve reserve = DeviceMemoryReserve.For(_config, 256);
        long nonExperts = Bytes(n => !IsExpert(n));
        long lastBlockExperts = Bytes(n => n.StartsWith("blk.2.") && IsExpert(n));
        // Room for everything but the experts, plus block 2's experts and a byte short of block 1's.
        PlacementPlan plan = Plan(options, free: reserve.Bytes + nonExperts + lastBlockExperts + Bytes(n => n.StartsWith("blk.1.") && IsExpert(n)) - 1);
        Assert.Equal(Matrices.Where(t => t.Name.StartsWith("blk.1.") && IsExpert(t.Name)).Select(t => t.Name).ToHashSet(), OnCpu(plan));
        Assert.Contains("as --n-cpu-moe 2", plan.Choice);
        Assert.True(plan.GpuBytes <= plan.FreeBytes);
        // The same memory asked for explicitly gives the same plan.
        Assert.Equal(OnCpu(plan), OnCpu(Plan(new PlacementOptions { CpuMoeLayers = 2, ContextSize = 256 })));
    }

    /// <summary>
    /// For a backend that streams CPU-placed routed experts to the GPU for prompts, the reserve holds the largest CPU
    /// block's experts: <c>--fit</c> leaves that room once any experts stay on the CPU (so the memory that kept block 2's
    /// experts above keeps none), an explicit plan shows it, and a plan that fits only without it still loads.
    /// </summary>
    [Fact]
    public void AStreamingBackendReservesOneBlockOfCpuExperts()
    {
        var options = new PlacementOptions { Fit = true, ContextSize = 256, FitTargetBytes = 0 };
        DeviceMemoryReserve reserve = DeviceMemoryReserve.For(_config, 256);
        long nonExperts = Bytes(n => !IsExpert(n));
        long block1 = Bytes(n => n.StartsWith("blk.1.") && IsExpert(n)), block2 = Bytes(n => n.StartsWith("blk.2.") && IsExpert(n));
        long free = reserve.Bytes + nonExperts + block2 + block1 - 1;
        PlacementPlan streaming = PlacementPlanner.Plan(_file, _config, options, free, streamsCpuExperts: true);
        Assert.Contains("as --n-cpu-moe 3", streaming.Choice);
        Assert.Equal(Math.Max(block1, block2), streaming.Reserve.StreamingBytes);
        Assert.True(streaming.GpuBytes <= free);
        Assert.Contains("streamed experts", streaming.Describe());
        Assert.Equal(0, PlacementPlanner.Plan(_file, _config, options, free).Reserve.StreamingBytes);

        var cpuMoe = new PlacementOptions { CpuMoeLayers = 2, ContextSize = 256 };
        PlacementPlan explicitPlan = PlacementPlanner.Plan(_file, _config, cpuMoe, null, streamsCpuExperts: true);
        Assert.Equal(block1, explicitPlan.Reserve.StreamingBytes);
        long fitsWithoutStreaming = explicitPlan.GpuBytes - explicitPlan.Reserve.StreamingBytes;
        Assert.Equal(block1, PlacementPlanner.Plan(_file, _config, cpuMoe, fitsWithoutStreaming, streamsCpuExperts: true).Reserve.StreamingBytes);
        Assert.Throws<PlacementException>(() => PlacementPlanner.Plan(_file, _config, cpuMoe, fitsWithoutStreaming - 1, streamsCpuExperts: true));
        Assert.Equal(0, PlacementPlanner.Plan(_file, _config, new PlacementOptions { ContextSize = 256 }, null, streamsCpuExperts: true).Reserve.StreamingBytes);
    }

    [Fact]
    public void FitDropsLayersWhenEvenTheNonExpertWeightsDoNotFit()
    {
        var options = new PlacementOptions { Fit = true, ContextSize = 256, FitTargetBytes = 0 };
        DeviceMemoryReserve reserve = DeviceMemoryReserve.For(_config, 256);
        long vectors = Bytes(n => _file.Tensors.Single(t => t.Name == n).Shape.Length == 1);
        long block2 = Bytes(n => n.StartsWith("blk.2.") && !IsExpert(n) && _file.Tensors.Single(t => t.Name == n).Shape.Length >= 2);
        long outputLayer = Bytes(n => n is "output.weight" or "token_embd.weight");
        // Room for the output layer and block 2 (less their experts): two layers counted back from the output.
        PlacementPlan plan = Plan(options, free: reserve.Bytes + vectors + outputLayer + block2);
        Assert.Contains("as -ngl 2 --cpu-moe", plan.Choice);
        Assert.Equal(OnCpu(Plan(new PlacementOptions { GpuLayers = 2, CpuMoe = true, ContextSize = 256 })), OnCpu(plan));
        Assert.Contains("blk.1.attn_q_a.weight", OnCpu(plan));
        Assert.DoesNotContain("output.weight", OnCpu(plan));
    }

    [Fact]
    public void AModelThatDoesNotFitIsAMessageWithTheNumbersAndTheOptions()
    {
        var e = Assert.Throws<PlacementException>(() => Plan(new PlacementOptions { ContextSize = 256 }, free: 1 << 20));
        Assert.Contains("does not fit on the GPU as placed (all on the GPU)", e.Message);
        Assert.Contains("0.00 GiB free", e.Message);
        Assert.Contains("routed experts", e.Message);
        Assert.Contains("KV cache (256 tokens)", e.Message);
        foreach (string option in new[] { "--fit", "--cpu-moe", "--n-cpu-moe", "-ngl", "--override-tensor", "--ctx-size" }) Assert.Contains(option, e.Message);

        // --fit cannot help when not even the KV cache and scratch fit.
        var fit = Assert.Throws<PlacementException>(() => Plan(new PlacementOptions { Fit = true, ContextSize = 256 }, free: 1 << 20));
        Assert.Contains("on the GPU: router and norms", fit.Message); // only vectors stay on the GPU
        Assert.Contains("to be left free", fit.Message);
    }

    [Fact]
    public void BadCombinationsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => Plan(new PlacementOptions { Fit = true, CpuMoe = true }, free: long.MaxValue / 4));
        Assert.Throws<ArgumentException>(() => Plan(new PlacementOptions { GpuLayers = -1 }));
        Assert.Throws<ArgumentException>(() => Plan(new PlacementOptions { CpuMoeLayers = -2 }));
        Assert.Throws<InvalidOperationException>(() => Plan(new PlacementOptions { Fit = true })); // no free memory known
    }

    [Fact]
    public void TheSummaryListsEachPartOnEachDevice()
    {
        string text = Plan(new PlacementOptions { CpuMoe = true, ContextSize = 512 }, free: 64L << 30).Describe();
        Assert.StartsWith("placement: --cpu-moe\n", text);
        Assert.Contains("routed experts", text);
        Assert.Contains("KV cache (512 tokens)", text);
        Assert.Contains("of 64.00 GiB free", text);
    }

    [Fact]
    public void TheKvCacheReserveIsWhatASessionAllocates()
    {
        using (Model deepSeek = ModelLoader.Load(_file))
            Assert.Equal(deepSeek.CreateSession(100).Cache.Bytes, DeviceMemoryReserve.KvCacheFor(_config, 100));
        string llamaPath = ModelTestKit.Synthesize(new SyntheticModelSpec { Architecture = "llama", VocabSize = 384, HiddenSize = 64, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 96 });
        try
        {
            using Model llama = ModelLoader.Load(llamaPath);
            Assert.Equal(llama.CreateSession(100).Cache.Bytes, DeviceMemoryReserve.KvCacheFor(llama.Config, 100));
        }
        finally
        {
            File.Delete(llamaPath);
        }
    }
}
