using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Concurrent branches (<see cref="CudaBackend.ConcurrentBranches"/>): DeepSeek2's decoded token runs its shared expert on
/// the side stream beside the routing and the routed experts. Decoding with branches and without (graphs recorded,
/// checked and replayed, and without graphs) gives the same tokens and logits bit for bit; a branch inside a pass
/// that throws leaves the backend usable; ops outside a model keep their results with a branch around them.
/// </summary>
public sealed unsafe class ConcurrentBranchTests(GpuFixture gpu, ITestOutputHelper output)
{
    public static TheoryData<string, bool> Models => new()
    {
        { "v3-q8_0", true }, { "v3-q8_0", false }, { "r1-iq1_s-q6_k", true }, { "r1-iq1_s-q6_k", false }, { "v3-f16", true }, { "v3-bf16", false },
    };

    private static SyntheticModelSpec Spec(string name) => name switch
    {
        "v3-q8_0" => ModelAgreementTests.V3EightLayerShape with { Seed = 83 },
        // F16 and BF16 weights: one-token products that round their input to the weights' type instead of packing it.
        "v3-f16" => ModelAgreementTests.V3EightLayerShape with { Seed = 90, DefaultType = GgmlType.F16 },
        "v3-bf16" => ModelAgreementTests.V3EightLayerShape with { Seed = 91, DefaultType = GgmlType.BF16 },
        // R1's kinds: IQ1_S routed experts (IQ2_XXS downs in the first MoE layer), Q6_K shared experts and output, Q4_K elsewhere.
        "r1-iq1_s-q6_k" => SyntheticPresets.TinyDeepSeekR1 with
        {
            VocabSize = 512, WeightScale = 1f, SharedExperts = 1, Seed = 84,
            TypeFor = n => n.Contains("_exps") ? (n.Contains("ffn_down_exps") && n.StartsWith("blk.1.") ? GgmlType.IQ2_XXS : GgmlType.IQ1_S)
                : n.Contains("_shexp") || n == "output.weight" ? GgmlType.Q6_K : n.Contains("norm") || n.Contains("gate_inp") || n.Contains("exp_probs") ? GgmlType.F32 : GgmlType.Q4_K,
        },
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void DecodingWithBranchesGivesTheSameLogits(string name, bool graphs)
    {
        gpu.Require();
        using var synthesized = new SynthesizedGguf(Spec(name), "fathom-cuda-branches");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        CudaBackend? branched = null, plain = null;
        using Model withBranches = ModelLoader.Load(file, new ModelOptions { Backend = _ => branched = new CudaBackend { ConcurrentBranches = true, UseGraphs = graphs } });
        using Model without = ModelLoader.Load(file, new ModelOptions { Backend = _ => plain = new CudaBackend { ConcurrentBranches = false, UseGraphs = graphs } });
        (List<int> branchedTokens, List<float[]> branchedLogits) = TestData.GreedyContinuation(withBranches, 31, 12, 40);
        (List<int> plainTokens, List<float[]> plainLogits) = TestData.GreedyContinuation(without, 31, 12, 40);
        Assert.NotNull(branched);
        Assert.NotNull(plain);
        Assert.True(branched.ConcurrentBranchCount > 0, "no branch ran on the side stream");
        Assert.Equal(0, plain.ConcurrentBranchCount);
        if (graphs) Assert.True(branched.VerifiedStepReplays > 0, "no decode step replayed a verified recording");
        Assert.Equal(plainTokens, branchedTokens);
        for (int i = 0; i < plainLogits.Count; i++)
            Assert.True(plainLogits[i].AsSpan().SequenceEqual(branchedLogits[i]), $"step {i}: relative L2 {TestData.RelativeL2(branchedLogits[i], plainLogits[i]):E2}");
        output.WriteLine($"{name}, graphs {graphs}: {branchedLogits.Count} passes equal bit for bit; {branched.ConcurrentBranchCount} branches, "
            + $"{branched.GraphReplays} replays ({branched.VerifiedStepReplays} verified)");
    }

    /// <summary>
    /// One-token products in a branch and on the main stream after it, each reading the packing of the same norm's
    /// output, then a SiLU and a product on each side: the same outputs as in order, and the norm's packing still serves
    /// the main stream's product after the branch (it packs nothing itself).
    /// </summary>
    [Fact]
    public void ProductsBesideABranchKeepTheirResultsAndTheNormsPacking()
    {
        gpu.Require();
        CudaBackend backend = gpu.Backend;
        // 1,792 columns: a shape of its own (the shared backend knows uploads by address and shape).
        const int n = 1792, rows = 96;
        var random = new Random(85);
        byte[] Weights(GgmlType type, int seed)
        {
            byte[] bytes = GC.AllocateArray<byte>(2 * rows * (int)TypeTraits.For(type).Layout.RowBytes(n), pinned: true);
            TestData.QuantizedRows(new Random(seed), TypeTraits.For(type), 2 * rows, n).CopyTo(bytes, 0);
            return bytes;
        }
        byte[] sideBytes = Weights(GgmlType.Q6_K, 86), mainBytes = Weights(GgmlType.Q4_K, 87);
        float[] x = gpu.Attached(TestData.Gaussian(random, n, 2f)), w = gpu.Attached(TestData.Gaussian(random, n)), h = gpu.Attached(new float[n]);
        float[] side = gpu.Attached(new float[2 * rows]), main = gpu.Attached(new float[2 * rows]);
        (float[] Side, float[] Main) Step(bool branches)
        {
            bool was = backend.ConcurrentBranches;
            backend.ConcurrentBranches = branches;
            try
            {
                fixed (byte* s = sideBytes)
                fixed (byte* m = mainBytes)
                {
                    WeightMatrix sideWeights = WeightMatrix.InPlace("branch.side", GgmlType.Q6_K, s, 2 * rows, n);
                    WeightMatrix mainWeights = WeightMatrix.InPlace("branch.main", GgmlType.Q4_K, m, 2 * rows, n);
                    backend.BeginForward(1, 1, replayable: false); // branches are taken in one-token passes
                    backend.RmsNorm(x, w, h, 1, 1e-6f);
                    backend.BeginConcurrentBranch();
                    backend.MatMul(sideWeights, h, side, 1);
                    backend.SiluMul(side.AsSpan(0, rows), side.AsSpan(rows, rows));
                    backend.EndConcurrentBranch();
                    long packings = backend.FusedPackings;
                    backend.MatMul(mainWeights, h, main, 1);
                    backend.SiluMul(main.AsSpan(0, rows), main.AsSpan(rows, rows));
                    backend.JoinConcurrentBranch();
                    backend.EndForward(completed: true);
                    output.WriteLine($"branches {branches}: {backend.FusedPackings - packings} fused packings after the branch");
                }
            }
            finally
            {
                backend.ConcurrentBranches = was;
            }
            backend.ReadToHost(side);
            backend.ReadToHost(main);
            return ((float[])side.Clone(), (float[])main.Clone());
        }

        var inOrder = Step(branches: false);
        Step(branches: true); // learns the packings as the branched order issues them
        long branchesBefore = backend.ConcurrentBranchCount;
        var branched = Step(branches: true);
        Assert.Equal(1, backend.ConcurrentBranchCount - branchesBefore);
        Assert.True(inOrder.Side.AsSpan().SequenceEqual(branched.Side), "the branch's outputs differ");
        Assert.True(inOrder.Main.AsSpan().SequenceEqual(branched.Main), "the main stream's outputs differ");
    }

    /// <summary>A pass that throws inside a branch leaves it open; the backend joins it, and the next pass runs.</summary>
    [Fact]
    public void ABranchLeftOpenIsJoinedByTheNextPass()
    {
        gpu.Require();
        CudaBackend backend = gpu.Backend;
        float[] x = gpu.Attached(TestData.Gaussian(new Random(88), 512)), y = gpu.Attached(TestData.Gaussian(new Random(89), 512));
        float[] expected = x.Zip(y, (a, b) => a + b).ToArray();
        backend.BeginForward(1, 1, replayable: false);
        long branches = backend.ConcurrentBranchCount;
        backend.BeginConcurrentBranch();
        backend.Add(x, y);
        backend.EndForward(completed: false); // as a pass's finally after an exception: the branch is joined
        Assert.Equal(1, backend.ConcurrentBranchCount - branches);
        backend.ReadToHost(x);
        Assert.Equal(expected, x);
        // A longer pass runs a branch in order.
        backend.BeginForward(2, 2, replayable: false);
        backend.BeginConcurrentBranch();
        backend.Add(x, y);
        backend.JoinConcurrentBranch();
        backend.EndForward(completed: true);
        Assert.Equal(1, backend.ConcurrentBranchCount - branches);
        backend.ReadToHost(x);
        Assert.Equal(expected.Zip(y, (a, b) => a + b).ToArray(), x);
    }
}
