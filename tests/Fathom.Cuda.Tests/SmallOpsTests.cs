using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The faster and fused forms of a decode step's small operations (<see cref="CudaBackend.FusedSmallOps"/>) against
/// the kernels and launches they replace: route_experts (one barrier a top-k round) chooses, weighs and scores exactly
/// as route_experts_block_rounds, ties and NaNs included; add_weighted_rows with the residual writes what
/// AddWeightedRows then Add write, and what the CPU writes; a V3-shaped model decodes the same tokens with the same
/// logits bit for bit with the switch on and off.
/// </summary>
public sealed class SmallOpsTests(GpuFixture gpu, ITestOutputHelper output) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    public static TheoryData<string> RoutingShapes => new() { "r1", "v2-softmax", "more-experts-than-threads", "experts-in-part-of-a-warp", "limits" };

    private static ExpertRouting Routing(string name) => name switch
    {
        "r1" => new ExpertRouting(256, 8, true, TestData.Pinned(TestData.Gaussian(new Random(41), 256, 0.2f)), 8, 4, true, 2.5f),
        "v2-softmax" => new ExpertRouting(64, 6, false, null, 1, 1, false, 1f),
        "more-experts-than-threads" => new ExpertRouting(2048, 8, false, null, 16, 3, true, 1f),
        "experts-in-part-of-a-warp" => new ExpertRouting(40, 6, true, TestData.Pinned(TestData.Gaussian(new Random(42), 40, 0.2f)), 5, 2, true, 1.5f),
        // The kernels' limits: 32 chosen experts, 64 groups.
        "limits" => new ExpertRouting(2048, 32, true, TestData.Pinned(TestData.Gaussian(new Random(43), 2048, 0.2f)), 64, 40, true, 1f),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Theory]
    [MemberData(nameof(RoutingShapes))]
    public void RoutingKernelEqualsTheBlockRoundsKernel(string name)
    {
        gpu.Require();
        ExpertRouting routing = Routing(name);
        if (routing.SelectionBias is not null) gpu.Backend.Attach(routing.SelectionBias);
        const int tokens = 12;
        int e = routing.ExpertCount, u = routing.UsedCount, size = e / routing.GroupCount;
        float[] logits = TestData.Gaussian(new Random(e * 3 + u), tokens * e, 3f);
        for (int i = 0; i < e; i++)
        {
            logits[i] = (i / 2) % 5; // equal logits in pairs: the choice rests on tie-breaking
            if (i % 7 == 3) logits[e + i] = float.NaN;
            logits[2 * e + i] = i % size; // every group scores alike
            logits[3 * e + i] = float.NaN;
        }
        (float[] Scores, float[] Ids, float[] Weights) Route(bool fused)
        {
            float[] scores = gpu.Attached(logits), ids = gpu.Attached(new float[tokens * u]), weights = gpu.Attached(new float[tokens * u]);
            bool before = gpu.Backend.FusedSmallOps;
            gpu.Backend.FusedSmallOps = fused;
            try
            {
                gpu.Backend.RouteExperts(routing, scores, ids, weights, tokens);
            }
            finally
            {
                gpu.Backend.FusedSmallOps = before;
            }
            foreach (float[] a in new[] { scores, ids, weights }) gpu.Backend.ReadToHost(a);
            return (scores, ids, weights);
        }
        var fast = Route(fused: true);
        var former = Route(fused: false);
        Assert.Equal(former.Ids, fast.Ids);
        Assert.True(former.Weights.Zip(fast.Weights).All(p => TestData.SameFloat(p.First, p.Second)), "weights differ");
        Assert.True(former.Scores.Zip(fast.Scores).All(p => TestData.SameFloat(p.First, p.Second)), "scores differ");
        // And the CPU's choices and weights, for the tokens without NaN logits (ExpertOpsTests holds the kernels to the
        // CPU's scan on the others' kind too; here the point is the new kernel against the former).
        float[] cpuScores = (float[])logits.Clone(), cpuIds = new float[tokens * u], cpuWeights = new float[tokens * u];
        _cpu.RouteExperts(routing, cpuScores, cpuIds, cpuWeights, tokens);
        foreach (int t in Enumerable.Range(0, tokens).Where(t => t is not (1 or 3)))
            for (int k = t * u; k < (t + 1) * u; k++)
            {
                Assert.Equal(cpuIds[k], fast.Ids[k]);
                Assert.Equal(cpuWeights[k], fast.Weights[k], 2e-6f * Math.Max(1f, Math.Abs(cpuWeights[k])));
            }
    }

    [Theory]
    [InlineData(7168, 8)]
    [InlineData(1536, 6)]
    [InlineData(100, 1)]
    public void WeightedRowsIntoTheResidualEqualTheSeparateOperations(int width, int count)
    {
        gpu.Require();
        var random = new Random(width + count);
        float[] rows = TestData.Gaussian(random, count * width), weights = TestData.Gaussian(random, count);
        float[] shared = TestData.Gaussian(random, width), residual = TestData.Gaussian(random, width);
        float[] cpuShared = (float[])shared.Clone(), cpuResidual = (float[])residual.Clone();
        _cpu.AddWeightedRowsToResidual(cpuResidual, cpuShared, rows, weights, width);

        float[] deviceRows = gpu.Attached(rows), deviceWeights = gpu.Attached(weights);
        float[] fusedShared = gpu.Attached(shared), fusedResidual = gpu.Attached(residual);
        float[] separateShared = gpu.Attached(shared), separateResidual = gpu.Attached(residual);
        gpu.Backend.AddWeightedRowsToResidual(fusedResidual, fusedShared, deviceRows, deviceWeights, width);
        gpu.Backend.AddWeightedRows(separateShared, deviceRows, deviceWeights, width);
        gpu.Backend.Add(separateResidual, separateShared);
        foreach (float[] a in new[] { fusedShared, fusedResidual, separateShared, separateResidual }) gpu.Backend.ReadToHost(a);
        Assert.Equal(separateShared, fusedShared);
        Assert.Equal(separateResidual, fusedResidual);
        Assert.Equal(cpuShared, fusedShared);
        Assert.Equal(cpuResidual, fusedResidual);

        // A residual on the host (not attached): the two operations, with the same result.
        float[] hostResidual = (float[])residual.Clone(), hostShared = gpu.Attached(shared);
        gpu.Backend.AddWeightedRowsToResidual(hostResidual, hostShared, deviceRows, deviceWeights, width);
        gpu.Backend.ReadToHost(hostShared);
        Assert.Equal(cpuResidual, hostResidual);
        Assert.Equal(cpuShared, hostShared);
    }

    [Theory]
    // rope dims, tokens, heads, row stride, head stride, offset, store offset, store width, cache row; rows: width, source stride, cache row, cache offset
    [InlineData(128, 1, 14, 14 * 128, 128, 0, 12 * 128, 256, 256, 256, 256, 256, 0)]   // Qwen2-1.5B decode: keys, then the values
    [InlineData(128, 5, 2, 256, 128, 0, 0, 256, 256, 256, 256, 256, 0)]                // a prompt's key and value rows
    [InlineData(64, 3, 1, 576, 576, 512, 512, 64, 576, 512, 512, 576, 0)]              // MLA: rotated key and normalized latent, one cache row
    [InlineData(64, 1, 1, 576, 576, 512, 512, 64, 576, 512, 512, 576, 0)]              // MLA decode
    [InlineData(128, 1, 2, 256, 128, 0, 0, 256, 256, 1000, 1000, 1024, 24)]            // a row wider than one row block
    public void RopeStoreWithRowsEqualsRopeStoreThenStoreRows(int dims, int tokens, int heads, int rowStride, int headStride, int offset,
        int storeOffset, int storeWidth, int cacheRow, int rowWidth, int rowSourceStride, int rowCacheRow, int rowCacheOffset)
    {
        gpu.Require();
        var random = new Random(dims + 7 * tokens + heads + rowWidth);
        var rope = new Rope(RopeStyle.NeoX, dims, 10000f);
        const int capacity = 40, position = 17;
        float[] input = TestData.Gaussian(random, tokens * rowStride), rowInput = TestData.Gaussian(random, tokens * rowSourceStride);
        float[] keyCache = TestData.Gaussian(random, capacity * cacheRow), rowCache = TestData.Gaussian(random, capacity * rowCacheRow);
        bool sameCache = rowCacheRow == cacheRow && storeWidth != cacheRow; // MLA: the latent and the rotated key share the cache row
        int keyOffset = storeWidth == cacheRow ? 0 : storeOffset;
        (float[] Values, float[] Keys, float[] Rows) Run(bool fused)
        {
            float[] values = gpu.Attached(input), rows = gpu.Attached(rowInput), keys = gpu.Attached(keyCache);
            float[] rowDestination = sameCache ? keys : gpu.Attached(rowCache);
            bool before = gpu.Backend.FusedSmallOps;
            gpu.Backend.FusedSmallOps = fused;
            try
            {
                gpu.Backend.RopeStoreWithRows(rope, values, tokens, heads, rowStride, headStride, offset, position, storeOffset, storeWidth,
                    keys.AsSpan(keyOffset), cacheRow, rows, rowSourceStride, rowDestination.AsSpan(rowCacheOffset), rowCacheRow, rowWidth);
            }
            finally
            {
                gpu.Backend.FusedSmallOps = before;
            }
            foreach (float[] a in new[] { values, keys, rowDestination }) gpu.Backend.ReadToHost(a);
            return (values, keys, rowDestination);
        }
        var fused = Run(fused: true);
        var former = Run(fused: false);
        Assert.Equal(former.Values, fused.Values);
        Assert.Equal(former.Keys, fused.Keys);
        Assert.Equal(former.Rows, fused.Rows);
        // The rows are copies: each token's source row at its position, the rest of the cache as it was.
        float[] expected = sameCache ? (float[])former.Keys.Clone() : (float[])rowCache.Clone();
        for (int t = 0; t < tokens; t++)
            rowInput.AsSpan(t * rowSourceStride, rowWidth).CopyTo(expected.AsSpan((position + t) * rowCacheRow + rowCacheOffset));
        Assert.Equal(expected, fused.Rows);
        // And the CPU's: RoPE, the key store, then the row store (its rotation to RopeMatchesTheCpu's tolerance).
        float[] cpuValues = (float[])input.Clone(), cpuKeys = (float[])keyCache.Clone(), cpuRows = sameCache ? cpuKeys : (float[])rowCache.Clone();
        _cpu.RopeStoreWithRows(rope, cpuValues, tokens, heads, rowStride, headStride, offset, position, storeOffset, storeWidth,
            cpuKeys.AsSpan(keyOffset), cacheRow, rowInput, rowSourceStride, cpuRows.AsSpan(rowCacheOffset), rowCacheRow, rowWidth);
        Assert.True(TestData.RelativeL2(fused.Values, cpuValues) < 1e-6, $"rotated rows: relative L2 {TestData.RelativeL2(fused.Values, cpuValues):E2}");
    }

    /// <summary>
    /// A V3-shaped model (MLA, shared and routed experts) decoded with the small operations' new forms and with the
    /// former ones: the same greedy tokens and the same logits at every step, bit for bit (both run the same products;
    /// the fused and faster kernels compute the same floats).
    /// </summary>
    [Fact]
    public void DeepSeekDecodesTheSameWithTheFormerSmallOps()
    {
        gpu.Require();
        using var synthesized = new SynthesizedGguf(ModelAgreementTests.V3EightLayerShape, "fathom-cuda-small-ops");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model fused = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { FusedSmallOps = true } });
        using Model former = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { FusedSmallOps = false } });
        (List<int> fusedTokens, List<float[]> fusedLogits) = TestData.GreedyContinuation(fused, 23, 9, 24);
        (List<int> formerTokens, List<float[]> formerLogits) = TestData.GreedyContinuation(former, 23, 9, 24);
        Assert.Equal(formerTokens, fusedTokens);
        for (int i = 0; i < formerLogits.Count; i++)
            Assert.True(formerLogits[i].AsSpan().SequenceEqual(fusedLogits[i]), $"step {i}: relative L2 {TestData.RelativeL2(fusedLogits[i], formerLogits[i]):E2}");
        output.WriteLine($"{fusedLogits.Count} passes equal bit for bit");
    }
}
