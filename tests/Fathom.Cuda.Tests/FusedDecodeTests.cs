using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Branch <c>fuse</c>'s fused decode kernels (<see cref="CudaBackend.FusedDecode"/>) against the launches they replace:
/// <c>router_route</c> (the router's product and one token's routing in one launch) writes the scores, ids and
/// weights that <c>matvec_f32_rows</c> then <c>route_experts</c> write, bit for bit, launch after launch (its counter
/// starts every launch at zero); it keeps the FFN norm's packing for the shared expert's gate; <c>rope_queries_and_key</c>
/// writes what the query rope, the rotated slices' copy and RopeStoreWithRows write; a DeepSeek model decodes the same
/// tokens with the same logits with the switch on and off.
/// </summary>
public sealed unsafe class FusedDecodeTests(GpuFixture gpu, ITestOutputHelper output) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    public static TheoryData<string> RouterShapes => new() { "r1", "r1-tied", "v3-fewer-experts-than-threads", "softmax-256", "more-experts-than-threads" };

    /// <summary>A routing and the router's width: R1's, V3's with 64 experts, a softmax of 256 (route_experts' block size), 320 experts.</summary>
    private static (ExpertRouting Routing, int Columns) Shape(string name) => name switch
    {
        "r1" or "r1-tied" => (new ExpertRouting(256, 8, true, TestData.Pinned(TestData.Gaussian(new Random(51), 256, 0.2f)), 8, 4, true, 2.5f), 7168),
        "v3-fewer-experts-than-threads" => (new ExpertRouting(64, 6, true, TestData.Pinned(TestData.Gaussian(new Random(52), 64, 0.2f)), 8, 4, true, 2.5f), 2048),
        "softmax-256" => (new ExpertRouting(256, 8, false, null, 1, 1, false, 1f), 1024),
        "more-experts-than-threads" => (new ExpertRouting(320, 8, true, TestData.Pinned(TestData.Gaussian(new Random(53), 320, 0.2f)), 10, 3, true, 1f), 1280),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    private (float[] Scores, float[] Ids, float[] Weights) Route(bool fused, WeightMatrix router, ExpertRouting routing, float[] input)
    {
        CudaBackend backend = gpu.Backend;
        float[] x = gpu.Attached(input), scores = gpu.Attached(Enumerable.Repeat(-1f, routing.ExpertCount).ToArray());
        float[] ids = gpu.Attached(Enumerable.Repeat(-1f, routing.UsedCount).ToArray()), weights = gpu.Attached(Enumerable.Repeat(-1f, routing.UsedCount).ToArray());
        bool was = backend.FusedDecode;
        backend.FusedDecode = fused;
        try
        {
            long before = backend.FusedRoutings;
            backend.RouteToken(router, routing, x, scores, ids, weights);
            Assert.Equal(fused ? 1 : 0, backend.FusedRoutings - before);
        }
        finally
        {
            backend.FusedDecode = was;
        }
        foreach (float[] a in new[] { scores, ids, weights }) backend.ReadToHost(a);
        return (scores, ids, weights);
    }

    [Theory]
    [MemberData(nameof(RouterShapes))]
    public void RouterRoutingEqualsTheProductThenTheRouting(string name)
    {
        gpu.Require();
        (ExpertRouting routing, int n) = Shape(name);
        if (routing.SelectionBias is not null) gpu.Backend.Attach(routing.SelectionBias);
        int e = routing.ExpertCount;
        var random = new Random(e + n);
        // Tied: every row alike, so every logit is equal and the choice rests on tie-breaking.
        float[] values = name == "r1-tied" ? Enumerable.Range(0, e * n).Select(i => (i % n % 5 - 2) * 0.25f).ToArray() : TestData.Gaussian(random, e * n, 0.05f);
        WeightMatrix router = WeightMatrix.FromFloats($"fuse.router.{name}", values, e, n);
        // Three tokens in a row: the counter must be back at zero for each launch.
        for (int token = 0; token < 3; token++)
        {
            float[] input = TestData.Gaussian(random, n);
            var fused = Route(fused: true, router, routing, input);
            var separate = Route(fused: false, router, routing, input);
            Assert.Equal(separate.Ids, fused.Ids);
            Assert.True(separate.Weights.Zip(fused.Weights).All(p => TestData.SameFloat(p.First, p.Second)), $"token {token}: weights differ");
            Assert.True(separate.Scores.Zip(fused.Scores).All(p => TestData.SameFloat(p.First, p.Second)), $"token {token}: scores differ");
            Assert.All(fused.Ids, id => Assert.InRange(id, 0f, e - 1));

            // The CPU's scores (its own product's order of additions: within float rounding).
            float[] cpuScores = new float[e], cpuIds = new float[routing.UsedCount], cpuWeights = new float[routing.UsedCount];
            _cpu.RouteToken(router, routing, input, cpuScores, cpuIds, cpuWeights);
            Assert.True(TestData.RelativeL2(fused.Scores, cpuScores) < 1e-5, $"token {token}: scores' relative L2 {TestData.RelativeL2(fused.Scores, cpuScores):E2}");
        }
        output.WriteLine($"{name}: 3 tokens equal bit for bit");
    }

    /// <summary>Routers the fused kernel does not take (too short rows; a softmax at another block size) keep the two launches, with their results.</summary>
    [Theory]
    [InlineData(64, 512, true)]   // rows of 128 float4: matvec_f32, not matvec_f32_rows
    [InlineData(64, 2048, false)] // a softmax over 64: route_experts' block of 64 threads sums in another order than 256
    public void RoutersTheKernelDoesNotTakeKeepTheTwoLaunches(int experts, int columns, bool sigmoid)
    {
        gpu.Require();
        CudaBackend backend = gpu.Backend;
        var routing = new ExpertRouting(experts, 4, sigmoid, null, 1, 1, true, 1f);
        var random = new Random(experts * columns);
        WeightMatrix router = WeightMatrix.FromFloats($"fuse.router.{experts}x{columns}", TestData.Gaussian(random, experts * columns, 0.05f), experts, columns);
        float[] x = gpu.Attached(TestData.Gaussian(random, columns)), scores = gpu.Attached(new float[experts]);
        float[] ids = gpu.Attached(new float[4]), weights = gpu.Attached(new float[4]);
        long before = backend.FusedRoutings;
        backend.RouteToken(router, routing, x, scores, ids, weights);
        Assert.Equal(before, backend.FusedRoutings);
        float[] cpuScores = new float[experts], cpuIds = new float[4], cpuWeights = new float[4];
        _cpu.RouteToken(router, routing, x, cpuScores, cpuIds, cpuWeights);
        foreach (float[] a in new[] { scores, ids, weights }) backend.ReadToHost(a);
        Assert.True(TestData.RelativeL2(scores, cpuScores) < 1e-5, $"scores' relative L2 {TestData.RelativeL2(scores, cpuScores):E2}");
        Assert.Throws<ArgumentException>(() => backend.RouteToken(router, new ExpertRouting(experts + 1, 4, sigmoid, null, 1, 1, true, 1f), x,
            new float[experts + 1], ids, weights));
    }

    /// <summary>
    /// DeepSeek's one-token FFN as the model now orders it: the norm, the router with its routing, then the shared
    /// expert's gate (an integer product). The norm learns to pack for the gate across the fused routing and then packs,
    /// and the gate's output is the same as without the fusion.
    /// </summary>
    [Fact]
    public void TheNormsPackingOutlivesTheFusedRouting()
    {
        gpu.Require();
        CudaBackend backend = gpu.Backend;
        // 2,560 columns: no other test's router has this shape (the shared backend knows an upload by address and shape).
        const int n = 2560, experts = 64, rows = 48;
        var random = new Random(61);
        var routing = new ExpertRouting(experts, 6, true, null, 8, 4, true, 2.5f);
        WeightMatrix router = WeightMatrix.FromFloats("fuse.router.packing", TestData.Gaussian(random, experts * n, 0.05f), experts, n);
        byte[] gateBytes = GC.AllocateArray<byte>(rows * (int)TypeTraits.For(GgmlType.Q4_K).Layout.RowBytes(n), pinned: true);
        TestData.QuantizedRows(new Random(62), TypeTraits.For(GgmlType.Q4_K), rows, n).CopyTo(gateBytes, 0);
        float[] x = gpu.Attached(TestData.Gaussian(random, n, 3f)), w = gpu.Attached(TestData.Gaussian(random, n)), h = gpu.Attached(new float[n]);
        float[] logits = gpu.Attached(new float[experts]), ids = gpu.Attached(new float[6]), weights = gpu.Attached(new float[6]), y = gpu.Attached(new float[rows]);
        float[] Step(bool fused)
        {
            bool was = backend.FusedDecode;
            backend.FusedDecode = fused;
            try
            {
                fixed (byte* p = gateBytes)
                {
                    WeightMatrix gate = WeightMatrix.InPlace("fuse.gate.packing", GgmlType.Q4_K, p, rows, n);
                    backend.RmsNorm(x, w, h, 1, 1e-6f);
                    backend.RouteToken(router, routing, h, logits, ids, weights);
                    backend.MatMul(gate, h, y, 1);
                }
            }
            finally
            {
                backend.FusedDecode = was;
            }
            backend.ReadToHost(y);
            return (float[])y.Clone();
        }

        float[] separate = Step(fused: false);
        Step(fused: true); // teaches the norm the gate's packing (across the fused routing)
        long packings = backend.FusedPackings, routings = backend.FusedRoutings;
        float[] fusedGate = Step(fused: true);
        Assert.Equal(1, backend.FusedPackings - packings);
        Assert.Equal(1, backend.FusedRoutings - routings);
        Assert.Equal(separate, fusedGate);
    }

    /// <summary>
    /// MLA's two norms in one launch (rms_norm_rows_pair) against two RmsNorm calls: both outputs bit for bit at R1's
    /// widths (q_a 1,536, latent 512), with the first row wider than one block's chunk (7,168: two float4 a thread), the
    /// second row the wider one, and in place; then the first row's packing for the product after it: learned over a
    /// step, made by the pair's kernel, and the product's output the same as after two lone norms.
    /// </summary>
    [Theory]
    [InlineData(1536, 512, true)]  // R1's q_a norm (in place) and latent norm
    [InlineData(7168, 512, false)]
    [InlineData(512, 1536, false)]
    [InlineData(256, 64, true)]
    public void TwoNormsInOneLaunchEqualTwoNorms(int n0, int n1, bool inPlace)
    {
        gpu.Require();
        CudaBackend backend = gpu.Backend;
        var random = new Random(n0 + n1);
        const int rows = 40;
        float[] x0 = gpu.Attached(TestData.Gaussian(random, n0, 2f)), w0 = gpu.Attached(TestData.Gaussian(random, n0));
        float[] x1 = gpu.Attached(TestData.Gaussian(random, n1, 0.5f)), w1 = gpu.Attached(TestData.Gaussian(random, n1));
        float[] y0 = gpu.Attached(new float[n0]), y1 = gpu.Attached(new float[n1]), product = gpu.Attached(new float[rows]);
        float[] input0 = (float[])x0.Clone();
        byte[] weightBytes = GC.AllocateArray<byte>(rows * (int)TypeTraits.For(GgmlType.Q4_K).Layout.RowBytes(n0), pinned: true);
        TestData.QuantizedRows(new Random(n0), TypeTraits.For(GgmlType.Q4_K), rows, n0).CopyTo(weightBytes, 0);
        (float[] First, float[] Second, float[] Product) Step(bool paired)
        {
            // The same input each time (an in-place norm overwrote it).
            input0.CopyTo(x0, 0);
            backend.WrittenOnHost(x0);
            float[] out0 = inPlace ? x0 : y0;
            bool was = backend.FusedDecode;
            backend.FusedDecode = paired;
            try
            {
                long before = backend.PairedNorms;
                fixed (byte* p = weightBytes)
                {
                    WeightMatrix next = WeightMatrix.InPlace("fuse.norm-pair.next", GgmlType.Q4_K, p, rows, n0);
                    backend.RmsNormPair(x0, w0, out0, x1, w1, y1, 1e-6f);
                    backend.MatMul(next, out0, product, 1);
                }
                Assert.Equal(paired ? 1 : 0, backend.PairedNorms - before);
            }
            finally
            {
                backend.FusedDecode = was;
            }
            foreach (float[] a in new[] { out0, y1, product }) backend.ReadToHost(a);
            return ((float[])out0.Clone(), (float[])y1.Clone(), (float[])product.Clone());
        }

        var separate = Step(paired: false);
        Step(paired: true); // teaches the pair the product's packing
        long packings = backend.FusedPackings;
        var pair = Step(paired: true);
        Assert.Equal(1, backend.FusedPackings - packings);
        Assert.True(separate.First.AsSpan().SequenceEqual(pair.First), "first row differs");
        Assert.True(separate.Second.AsSpan().SequenceEqual(pair.Second), "second row differs");
        Assert.True(separate.Product.AsSpan().SequenceEqual(pair.Product), "the product after the pair differs");
        float[] cpu0 = new float[n0], cpu1 = new float[n1];
        _cpu.RmsNorm(input0, w0, cpu0, 1, 1e-6f);
        _cpu.RmsNorm(x1, w1, cpu1, 1, 1e-6f);
        Assert.True(TestData.RelativeL2(pair.First, cpu0) < 1e-6 && TestData.RelativeL2(pair.Second, cpu1) < 1e-6, "the pair is not the CPU's norms");
    }

    /// <summary>
    /// MLA's rotations in one launch (rope_queries_and_key) against the query rope, the copy of the rotated slices and
    /// RopeStoreWithRows: the rotated queries (in place and beside the absorbed parts), the rotated key, the cache rows
    /// and the untouched values between them, bit for bit; the query rotation within the CPU's tolerance (RoPE's).
    /// </summary>
    [Theory]
    // query heads, tokens, query head (nope + rot), nope, latent rank, rope dims, position, style
    [InlineData(128, 1, 192, 128, 512, 64, 17, RopeStyle.Normal)] // R1's decode
    [InlineData(128, 3, 192, 128, 512, 64, 5, RopeStyle.Normal)]  // a prompt
    [InlineData(4, 2, 64, 32, 256, 32, 0, RopeStyle.NeoX)]         // a tiny model, the other pairing
    public void MlaRotationsInOneLaunchEqualTheSeparateOperations(int queryHeads, int tokens, int queryHead, int nope, int latentRank, int dims,
        int position, RopeStyle style)
    {
        gpu.Require();
        var random = new Random(queryHeads + tokens + dims);
        var rope = new Rope(style, dims, 10000f);
        const int capacity = 32;
        int qRow = queryHeads * queryHead, latentRow = latentRank + dims;
        float[] queryInput = TestData.Gaussian(random, tokens * qRow), kvInput = TestData.Gaussian(random, tokens * latentRow);
        float[] latentInput = TestData.Gaussian(random, tokens * latentRank), absorbedInput = TestData.Gaussian(random, tokens * queryHeads * latentRow);
        float[] cacheInput = TestData.Gaussian(random, capacity * latentRow);
        (float[] Queries, float[] Absorbed, float[] Kv, float[] Cache) Run(bool fused)
        {
            CudaBackend backend = gpu.Backend;
            float[] q = gpu.Attached(queryInput), absorbed = gpu.Attached(absorbedInput), kv = gpu.Attached(kvInput);
            float[] latents = gpu.Attached(latentInput), cache = gpu.Attached(cacheInput);
            bool was = backend.FusedDecode;
            backend.FusedDecode = fused;
            try
            {
                long before = backend.FusedMlaRotations;
                backend.RopeQueriesThenStoreWithRows(rope, q, queryHeads, qRow, queryHead, nope, absorbed.AsSpan(latentRank), latentRow,
                    kv, tokens, 1, latentRow, latentRow, latentRank, position, latentRank, dims, cache.AsSpan(latentRank), latentRow,
                    latents, latentRank, cache, latentRow, latentRank);
                Assert.Equal(fused ? 1 : 0, backend.FusedMlaRotations - before);
            }
            finally
            {
                backend.FusedDecode = was;
            }
            foreach (float[] a in new[] { q, absorbed, kv, cache }) backend.ReadToHost(a);
            return (q, absorbed, kv, cache);
        }
        var fused = Run(fused: true);
        var separate = Run(fused: false);
        Assert.Equal(separate.Queries, fused.Queries);
        Assert.Equal(separate.Absorbed, fused.Absorbed);
        Assert.Equal(separate.Kv, fused.Kv);
        Assert.Equal(separate.Cache, fused.Cache);
        // The absorbed rows' latent parts are untouched, their rotary parts the rotated query slices.
        for (int r = 0; r < tokens * queryHeads; r++)
        {
            Assert.True(absorbedInput.AsSpan(r * latentRow, latentRank).SequenceEqual(fused.Absorbed.AsSpan(r * latentRow, latentRank)), $"row {r}: latent part changed");
            Assert.True(fused.Queries.AsSpan(r * queryHead + nope, dims).SequenceEqual(fused.Absorbed.AsSpan(r * latentRow + latentRank, dims)), $"row {r}: rotary part");
        }
        float[] cpuQueries = (float[])queryInput.Clone(), cpuAbsorbed = (float[])absorbedInput.Clone(), cpuKv = (float[])kvInput.Clone(), cpuCache = (float[])cacheInput.Clone();
        _cpu.RopeQueriesThenStoreWithRows(rope, cpuQueries, queryHeads, qRow, queryHead, nope, cpuAbsorbed.AsSpan(latentRank), latentRow,
            cpuKv, tokens, 1, latentRow, latentRow, latentRank, position, latentRank, dims, cpuCache.AsSpan(latentRank), latentRow,
            latentInput, latentRank, cpuCache, latentRow, latentRank);
        Assert.True(TestData.RelativeL2(fused.Queries, cpuQueries) < 1e-6, $"queries: relative L2 {TestData.RelativeL2(fused.Queries, cpuQueries):E2}");
        Assert.True(TestData.RelativeL2(fused.Absorbed, cpuAbsorbed) < 1e-6, $"absorbed: relative L2 {TestData.RelativeL2(fused.Absorbed, cpuAbsorbed):E2}");
        Assert.True(TestData.RelativeL2(fused.Cache, cpuCache) < 1e-6, $"cache: relative L2 {TestData.RelativeL2(fused.Cache, cpuCache):E2}");
    }

    /// <summary>
    /// A DeepSeek model whose router rows the fused kernel takes (hidden 1,024, sigmoid routing in groups) decoded with
    /// the switch on and off, graphs replayed: the same greedy tokens and the same logits at every step, bit for bit.
    /// </summary>
    [Fact]
    public void DeepSeekDecodesTheSameWithAndWithoutTheFusedDecodeKernels()
    {
        gpu.Require();
        var spec = ModelAgreementTests.V3EightLayerShape with
        {
            HiddenSize = 1024, Experts = 16, ExpertsUsed = 4, ExpertGroupCount = 4, ExpertGroupUsedCount = 2, ExpertFeedForward = 128,
            FeedForward = 256, Seed = 71,
        };
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-fused-decode");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        CudaBackend? fusedBackend = null;
        using Model fused = ModelLoader.Load(file, new ModelOptions { Backend = _ => fusedBackend = new CudaBackend { FusedDecode = true } });
        using Model former = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { FusedDecode = false } });
        (List<int> fusedTokens, List<float[]> fusedLogits) = TestData.GreedyContinuation(fused, 29, 9, 24);
        (List<int> formerTokens, List<float[]> formerLogits) = TestData.GreedyContinuation(former, 29, 9, 24);
        Assert.NotNull(fusedBackend);
        Assert.True(fusedBackend.FusedRoutings > 0, "the router was never fused");
        Assert.True(fusedBackend.FusedMlaRotations > 0, "MLA's rotations were never fused");
        Assert.True(fusedBackend.PairedNorms > 0, "MLA's two norms were never paired");
        Assert.Equal(formerTokens, fusedTokens);
        for (int i = 0; i < formerLogits.Count; i++)
            Assert.True(formerLogits[i].AsSpan().SequenceEqual(fusedLogits[i]), $"step {i}: relative L2 {TestData.RelativeL2(fusedLogits[i], formerLogits[i]):E2}");
        output.WriteLine($"{fusedLogits.Count} passes equal bit for bit; {fusedBackend.FusedRoutings} fused routings, {fusedBackend.FusedMlaRotations} fused MLA rotations");
    }
}
