using Fathom.Cpu;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The one-warp routing (<see cref="CudaBackend.FastRouting"/>, Kernels/experts.cu <c>route_row_warp</c>) against the
/// block-wide rounds it replaces and against the CPU's <see cref="ExpertRouting.Route"/>: <c>route_experts</c> over many
/// tokens of every shape the warp takes (R1's, V3-8l's, softmax routers of Qwen-MoE's sizes, groups of whole lanes and
/// groups scanned from shared memory) with gaussian, tied, all-equal, -inf and saturating logits chooses the CPU's
/// experts with its weights, and equals the block-wide rounds bit for bit (NaN logits too, where the CPU's IndexOfMax
/// lets a NaN win and the kernels never do); <c>router_route</c> equals itself with the switch off, launch after launch.
/// </summary>
public sealed class WarpRoutingTests(GpuFixture gpu, ITestOutputHelper output) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    public static TheoryData<string> Shapes => new()
    {
        "r1", "r1-no-groups", "r1-groups-of-four", "v3-8l", "v3-groups-of-one", "qwen-60-softmax", "qwen3-128-softmax", "groups-of-six-lanes",
        "forty-experts", "all-chosen",
    };

    private static ExpertRouting Routing(string name) => name switch
    {
        "r1" => new ExpertRouting(256, 8, true, Bias(256, 61), 8, 4, true, 2.5f),            // 8 a lane, groups of 4 lanes
        "r1-no-groups" => new ExpertRouting(256, 8, true, Bias(256, 62), 1, 1, true, 2.5f),
        "r1-groups-of-four" => new ExpertRouting(256, 8, true, Bias(256, 63), 64, 20, true, 1f), // groups scanned, two a lane
        "v3-8l" => new ExpertRouting(64, 6, true, Bias(64, 64), 8, 4, true, 2.5f),            // 2 a lane, groups of 4 lanes
        "v3-groups-of-one" => new ExpertRouting(64, 6, true, Bias(64, 65), 64, 30, true, 1f),
        "qwen-60-softmax" => new ExpertRouting(60, 4, false, null, 1, 1, false, 1f),           // Qwen1.5-MoE's router
        "qwen3-128-softmax" => new ExpertRouting(128, 8, false, null, 1, 1, true, 1f),         // Qwen3-MoE's
        "groups-of-six-lanes" => new ExpertRouting(96, 8, true, Bias(96, 66), 4, 2, true, 1f), // groups of 24, scanned
        "forty-experts" => new ExpertRouting(40, 6, true, Bias(40, 67), 5, 2, true, 1.5f),    // 20 lanes, groups of 4 lanes
        "all-chosen" => new ExpertRouting(24, 24, true, null, 1, 1, true, 1f),                 // every expert, the last ones tied
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    private static float[] Bias(int experts, int seed) => TestData.Pinned(TestData.Gaussian(new Random(seed), experts, 0.2f));

    // Row kinds: gaussian, ties among few values, all equal, some -inf logits (scores of 0), large logits (sigmoids
    // rounding to 0 and 1), some NaNs, all NaN. The last two only against the block-wide rounds.
    private const int Kinds = 7, FiniteKinds = 5, TokensPerKind = 6;

    private static float[] Logits(int experts, int seed)
    {
        var random = new Random(seed);
        float[] logits = TestData.Gaussian(random, Kinds * TokensPerKind * experts, 3f);
        for (int t = 0; t < Kinds * TokensPerKind; t++)
        {
            Span<float> row = logits.AsSpan(t * experts, experts);
            for (int i = 0; i < experts; i++)
                row[i] = (t / TokensPerKind) switch
                {
                    1 => random.Next(-1, 3),
                    2 => 0.75f,
                    3 => random.Next(4) == 0 ? float.NegativeInfinity : row[i],
                    4 => 100f * row[i],
                    5 => random.Next(8) == 0 ? float.NaN : row[i],
                    6 => float.NaN,
                    _ => row[i],
                };
        }
        return logits;
    }

    private (float[] Scores, float[] Ids, float[] Weights) Route(bool fast, ExpertRouting routing, float[] logits, int tokens)
    {
        CudaBackend backend = gpu.Backend;
        float[] scores = (float[])logits.Clone(), ids = new float[tokens * routing.UsedCount], weights = new float[tokens * routing.UsedCount];
        bool was = backend.FastRouting;
        backend.FastRouting = fast;
        try
        {
            backend.RouteExperts(routing, scores, ids, weights, tokens);
        }
        finally
        {
            backend.FastRouting = was;
        }
        return (scores, ids, weights);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void OneWarpRoutesAsTheBlockRoundsAndTheCpu(string name)
    {
        gpu.Require();
        ExpertRouting routing = Routing(name);
        if (routing.SelectionBias is not null) gpu.Backend.Attach(routing.SelectionBias);
        int e = routing.ExpertCount, u = routing.UsedCount, tokens = Kinds * TokensPerKind;
        float[] logits = Logits(e, e * 31 + u);
        var warp = Route(fast: true, routing, logits, tokens);
        var rounds = Route(fast: false, routing, logits, tokens);
        Assert.True(rounds.Ids.Zip(warp.Ids).All(p => TestData.SameFloat(p.First, p.Second)), "ids differ from the block-wide rounds'");
        Assert.True(rounds.Weights.Zip(warp.Weights).All(p => TestData.SameFloat(p.First, p.Second)), "weights differ from the block-wide rounds'");
        Assert.True(rounds.Scores.Zip(warp.Scores).All(p => TestData.SameFloat(p.First, p.Second)), "scores differ from the block-wide rounds'");

        int finite = FiniteKinds * TokensPerKind;
        float[] cpuScores = logits[..(finite * e)], cpuIds = new float[finite * u], cpuWeights = new float[finite * u];
        _cpu.RouteExperts(routing, cpuScores, cpuIds, cpuWeights, finite);
        Assert.Equal(cpuIds, warp.Ids[..(finite * u)]);
        for (int i = 0; i < cpuWeights.Length; i++) Assert.Equal(cpuWeights[i], warp.Weights[i], 2e-6f * Math.Max(1f, Math.Abs(cpuWeights[i])));
        for (int i = 0; i < cpuScores.Length; i++) Assert.Equal(cpuScores[i], warp.Scores[i], 2e-6f);
        output.WriteLine($"{name}: {tokens} tokens as the block-wide rounds bit for bit, {finite} as the CPU");
    }

    /// <summary>
    /// The router's product with the routing in one launch: the one-warp routing's result is the block-wide rounds', bit
    /// for bit. The routers' shapes are used by no other test: the backend knows uploaded weights by address and shape, so
    /// a router allocated where another test's freed one of the same shape lay would be read as that one.
    /// </summary>
    [Theory]
    [InlineData(256, 8, 7040, true)]  // R1's routing
    [InlineData(64, 6, 2304, true)]   // V3-8l's: fewer experts than the block's threads
    [InlineData(256, 8, 1152, false)] // a softmax over 256: its sums by the whole block
    public void RouterRoutingWithOneWarpEqualsTheBlockRounds(int experts, int used, int columns, bool sigmoid)
    {
        gpu.Require();
        CudaBackend backend = gpu.Backend;
        var routing = sigmoid ? new ExpertRouting(experts, used, true, Bias(experts, experts + 70), 8, 4, true, 2.5f)
            : new ExpertRouting(experts, used, false, null, 1, 1, false, 1f);
        if (routing.SelectionBias is not null) backend.Attach(routing.SelectionBias);
        var random = new Random(experts * columns + 5);
        WeightMatrix router = WeightMatrix.FromFloats($"warp-route.router.{experts}x{columns}{(sigmoid ? "" : "-softmax")}",
            TestData.Gaussian(random, experts * columns, 0.05f), experts, columns);
        for (int token = 0; token < 3; token++)
        {
            float[] input = gpu.Attached(TestData.Gaussian(random, columns));
            var results = new List<float[]>[2];
            for (int fast = 0; fast < 2; fast++)
            {
                float[] scores = gpu.Attached(new float[experts]), ids = gpu.Attached(new float[used]), weights = gpu.Attached(new float[used]);
                bool was = backend.FastRouting;
                backend.FastRouting = fast == 1;
                try
                {
                    long before = backend.FusedRoutings;
                    backend.RouteToken(router, routing, input, scores, ids, weights);
                    Assert.Equal(1, backend.FusedRoutings - before);
                }
                finally
                {
                    backend.FastRouting = was;
                }
                foreach (float[] a in new[] { scores, ids, weights }) backend.ReadToHost(a);
                results[fast] = [scores, ids, weights];
            }
            for (int i = 0; i < 3; i++)
                Assert.True(results[0][i].Zip(results[1][i]).All(p => TestData.SameFloat(p.First, p.Second)), $"token {token}: output {i} differs");
            // The CPU's scores (its own product's order of additions: within float rounding).
            float[] cpuScores = new float[experts], cpuIds = new float[used], cpuWeights = new float[used];
            _cpu.RouteToken(router, routing, input, cpuScores, cpuIds, cpuWeights);
            Assert.True(TestData.RelativeL2(results[1][0], cpuScores) < 1e-5, $"token {token}: scores' relative L2 {TestData.RelativeL2(results[1][0], cpuScores):E2}");
        }
    }
}
