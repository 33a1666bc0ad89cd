using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Mixture-of-experts routing and grouped products on the device (<see cref="CudaBackend"/>'s Experts part) against the
/// CPU: the routing kernel chooses the CPU's experts (equal scores included) with its weights; grouped products equal
/// the GPU's own one-matrix products bit for bit and the CPU's within the products' rounding; a V3-shaped model that
/// decodes without reading back to the host replays its decode steps as graphs with unchanged logits.
/// </summary>
public sealed unsafe class ExpertOpsTests(GpuFixture gpu, ITestOutputHelper output) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    // Weights live for the whole run: the GPU backend knows uploaded matrices by address.
    private static readonly byte[] ExpertBytes = Quantized(GgmlType.Q4_K, 8 * 72, 768, 31);
    private static readonly byte[] Iq1Bytes = Quantized(GgmlType.IQ1_S, 8 * 40, 512, 32);
    private static readonly byte[] HeadBytes = Quantized(GgmlType.Q8_0, 4 * 48, 128, 33);

    private static byte[] Quantized(GgmlType type, int rows, int columns, int seed)
    {
        byte[] bytes = GC.AllocateArray<byte>(rows * (int)TypeTraits.For(type).Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(new Random(seed), TypeTraits.For(type), rows, columns).CopyTo(bytes, 0);
        return bytes;
    }

    private static WeightMatrix[] Stack(byte[] bytes, GgmlType type, int count, int rows, int columns, string name)
    {
        fixed (byte* p = bytes)
        {
            WeightMatrix all = WeightMatrix.InPlace(name, type, p, count * rows, columns);
            return [.. Enumerable.Range(0, count).Select(i => all.SliceRows(i * rows, rows, $"{name}[{i}]"))];
        }
    }

    public static TheoryData<string, bool> RoutingCases => new()
    {
        { "v2-softmax", false }, { "v3-sigmoid-groups", true }, { "r1-sigmoid-groups-scaled", true }, { "softmax-normalized", false },
        { "more-experts-than-threads", true }, { "experts-in-part-of-a-warp", false },
    };

    private static ExpertRouting Routing(string name) => name switch
    {
        "v2-softmax" => new ExpertRouting(64, 6, false, null, 1, 1, false, 1f),
        "v3-sigmoid-groups" => new ExpertRouting(64, 6, true, TestData.Pinned(TestData.Gaussian(new Random(3), 64, 0.2f)), 8, 4, true, 2.5f),
        "r1-sigmoid-groups-scaled" => new ExpertRouting(256, 8, true, TestData.Pinned(TestData.Gaussian(new Random(4), 256, 0.2f)), 8, 4, true, 2.5f),
        "softmax-normalized" => new ExpertRouting(16, 4, false, null, 4, 2, true, 1f),
        // The kernel's block is a thread per expert, at most 1,024, in whole warps: 2,048 experts take two each.
        "more-experts-than-threads" => new ExpertRouting(2048, 8, false, null, 16, 3, true, 1f),
        "experts-in-part-of-a-warp" => new ExpertRouting(40, 6, true, TestData.Pinned(TestData.Gaussian(new Random(5), 40, 0.2f)), 5, 2, true, 1.5f),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    /// <summary>The routing kernel's experts are the CPU's, its weights and scores agree to float rounding (exp, sums).</summary>
    [Theory]
    [MemberData(nameof(RoutingCases))]
    public void RoutingKernelChoosesTheCpusExperts(string name, bool attach)
    {
        gpu.Require();
        ExpertRouting routing = Routing(name);
        if (attach && routing.SelectionBias is not null) gpu.Backend.Attach(routing.SelectionBias);
        const int tokens = 9;
        int e = routing.ExpertCount, u = routing.UsedCount;
        float[] logits = TestData.Gaussian(new Random(e + u), tokens * e, 3f);
        // Token 0: equal logits in pairs, so the choice rests on tie-breaking.
        for (int i = 0; i < e; i++) logits[i] = (i / 2) % 5;
        float[] cpuScores = (float[])logits.Clone(), cpuIds = new float[tokens * u], cpuWeights = new float[tokens * u];
        _cpu.RouteExperts(routing, cpuScores, cpuIds, cpuWeights, tokens);
        float[] scores = attach ? gpu.Attached(logits) : (float[])logits.Clone();
        float[] ids = attach ? gpu.Attached(new float[tokens * u]) : new float[tokens * u];
        float[] weights = attach ? gpu.Attached(new float[tokens * u]) : new float[tokens * u];
        gpu.Backend.RouteExperts(routing, scores, ids, weights, tokens);
        if (attach)
            foreach (float[] a in new[] { scores, ids, weights }) gpu.Backend.ReadToHost(a);
        Assert.Equal(cpuIds, ids);
        for (int i = 0; i < weights.Length; i++) Assert.Equal(cpuWeights[i], weights[i], 2e-6f * Math.Max(1f, Math.Abs(cpuWeights[i])));
        for (int i = 0; i < scores.Length; i++) Assert.Equal(cpuScores[i], scores[i], 2e-6f);
    }

    /// <summary>
    /// A token's experts in one launch per matrix kind: the chosen gates (shared input), then downs (each its own
    /// input at a stride), with the ids in device memory; and the weighted sum into the residual row.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.IQ1_S)]
    public void ExpertProductsEqualOneProductPerChosenMatrix(GgmlType type)
    {
        gpu.Require();
        (WeightMatrix[] experts, int rows, int columns) = type == GgmlType.Q4_K
            ? (Stack(ExpertBytes, type, 8, 72, 768, "experts.q4_k"), 72, 768)
            : (Stack(Iq1Bytes, type, 8, 40, 512, "experts.iq1_s"), 40, 512);
        var random = new Random(columns);
        float[] ids = gpu.Attached([6, 1, 3]);
        const int slot = 1024; // inputs and outputs at a stride wider than a row, as the MoE layer lays them out
        float[] inputs = gpu.Attached(TestData.Gaussian(random, 3 * slot));
        float[] shared = gpu.Attached(inputs.AsSpan(0, columns).ToArray());
        float[] grouped = gpu.Attached(Enumerable.Repeat(5f, 3 * slot).ToArray()), stridedGroup = gpu.Attached(Enumerable.Repeat(5f, 3 * slot).ToArray());
        gpu.Backend.MatMulExperts(experts, ids, shared, 0, grouped, slot);
        gpu.Backend.MatMulExperts(experts, ids, inputs, slot, stridedGroup, slot);
        gpu.Backend.ReadToHost(grouped);
        gpu.Backend.ReadToHost(stridedGroup);
        int[] chosen = [6, 1, 3];
        float[] cpuShared = new float[3 * slot], cpuStrided = new float[3 * slot];
        _cpu.MatMulGroup([.. chosen.Select(i => experts[i])], inputs.AsSpan(0, columns).ToArray(), 0, cpuShared, slot);
        _cpu.MatMulGroup([.. chosen.Select(i => experts[i])], (float[])inputs.Clone(), slot, cpuStrided, slot);
        for (int k = 0; k < 3; k++)
        {
            float[] one = new float[rows], strided = new float[rows];
            gpu.Backend.MatMul(experts[chosen[k]], shared, one, 1);
            gpu.Backend.MatMul(experts[chosen[k]], inputs.AsSpan(k * slot, columns).ToArray(), strided, 1);
            Assert.Equal(one, grouped.AsSpan(k * slot, rows).ToArray());
            Assert.Equal(strided, stridedGroup.AsSpan(k * slot, rows).ToArray());
            Assert.True(TestData.RelativeL2(grouped.AsSpan(k * slot, rows), cpuShared.AsSpan(k * slot, rows)) < 1e-5);
            Assert.True(TestData.RelativeL2(stridedGroup.AsSpan(k * slot, rows), cpuStrided.AsSpan(k * slot, rows)) < 1e-5);
            Assert.All(grouped.AsSpan(k * slot + rows, slot - rows).ToArray(), v => Assert.Equal(5f, v)); // between the rows: untouched
        }

        float[] residual = TestData.Gaussian(random, rows), weights = [0.25f, -1.5f, 0.75f];
        float[] expected = (float[])residual.Clone();
        float[] down = grouped.AsSpan(0, 3 * slot).ToArray(), rowsOf = new float[3 * rows];
        for (int k = 0; k < 3; k++) down.AsSpan(k * slot, rows).CopyTo(rowsOf.AsSpan(k * rows));
        _cpu.AddWeightedRows(expected, rowsOf, weights, rows);
        float[] actual = gpu.Attached(residual), deviceRows = gpu.Attached(rowsOf), deviceWeights = gpu.Attached(weights);
        gpu.Backend.AddWeightedRows(actual, deviceRows, deviceWeights, rows);
        gpu.Backend.ReadToHost(actual);
        Assert.Equal(expected, actual);
    }

    /// <summary>
    /// MLA's per-head k_b over a prompt in one launch: strided queries in, strided absorbed rows out, equal to each head's
    /// product over its gathered rows; and with a query stride that splits the activation blocks (gathered first).
    /// </summary>
    [Theory]
    [InlineData(9, 192)]
    [InlineData(1, 192)]
    [InlineData(5, 200)]
    public void BatchedHeadProductsEqualOneProductPerHead(int tokens, int qkHead)
    {
        gpu.Require();
        const int heads = 4, latent = 48, nope = 128, latentRow = 64;
        WeightMatrix[] kB = Stack(HeadBytes, GgmlType.Q8_0, heads, latent, nope, "attn_k_b.q8_0");
        var random = new Random(tokens + qkHead);
        float[] q = gpu.Attached(TestData.Gaussian(random, tokens * heads * qkHead));
        float[] absorbed = gpu.Attached(Enumerable.Repeat(3f, tokens * heads * latentRow).ToArray());
        gpu.Backend.MatMulGroup(kB, q, qkHead, absorbed, latentRow, tokens, heads * qkHead, heads * latentRow);
        gpu.Backend.ReadToHost(absorbed);
        float[] cpu = Enumerable.Repeat(3f, tokens * heads * latentRow).ToArray();
        _cpu.MatMulGroup(kB, (float[])q.Clone(), qkHead, cpu, latentRow, tokens, heads * qkHead, heads * latentRow);
        for (int h = 0; h < heads; h++)
        {
            float[] gathered = new float[tokens * nope], product = new float[tokens * latent];
            for (int t = 0; t < tokens; t++) q.AsSpan(t * heads * qkHead + h * qkHead, nope).CopyTo(gathered.AsSpan(t * nope));
            gpu.Backend.MatMul(kB[h], gathered, product, tokens);
            for (int t = 0; t < tokens; t++)
            {
                Span<float> row = absorbed.AsSpan(t * heads * latentRow + h * latentRow, latentRow);
                Assert.Equal(product.AsSpan(t * latent, latent).ToArray(), row[..latent].ToArray());
                Assert.All(row[latent..].ToArray(), v => Assert.Equal(3f, v));
                Assert.True(TestData.RelativeL2(row[..latent], cpu.AsSpan(t * heads * latentRow + h * latentRow, latent)) < 1e-5);
            }
        }
    }

    /// <summary>
    /// A model of the V3 preset's kind (sigmoid routing with a bias and groups, q-LoRA, split k_b/v_b, YaRN, IQ1_S
    /// experts beside Q4_K/Q6_K): its decode steps have no read-back, so they are recorded and replayed as graphs, and
    /// the replayed logits equal the step-by-step ones.
    /// </summary>
    [Fact]
    public void MoeDecodeStepsReplayAsGraphsWithUnchangedLogits()
    {
        gpu.Require();
        SyntheticModelSpec spec = SyntheticPresets.TinyDeepSeekR1 with
        {
            VocabSize = 512, WeightScale = 1f, Experts = 16, ExpertsUsed = 4, SplitKvB = true, Seed = 23,
        };
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-moe-graphs");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model replayed = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true } });
        using Model plain = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = false } });
        List<float[]> expected = Decode(plain), actual = Decode(replayed);
        for (int i = 0; i < expected.Count; i++) Assert.True(expected[i].AsSpan().SequenceEqual(actual[i]), $"step {i}: replayed logits differ");
        Assert.True(((CudaBackend)replayed.Backend).GraphLaunches >= 8, $"only {((CudaBackend)replayed.Backend).GraphLaunches} steps were replayed");
    }

    public static TheoryData<string> RoutingPlaces => new() { "q8_0", "iq1_s-mix" };

    /// <summary>
    /// The same model on the GPU twice: with the routing, expert products and weighted sum on the device, and with
    /// them on the host as before (the interface's defaults: routing after a read-back, one product per chosen
    /// expert). Both run the same product kernels, so only the routing kernel's weights (exp and sum order, last
    /// bits) differ: the greedy tokens are the same and every step's logits agree to 1e-5.
    /// </summary>
    [Theory]
    [MemberData(nameof(RoutingPlaces))]
    public void DeviceRoutingDecodesAsHostRoutingDid(string types)
    {
        gpu.Require();
        SyntheticModelSpec spec = ModelAgreementTests.V3EightLayerShape;
        if (types == "iq1_s-mix")
            spec = spec with { TypeFor = n => n.Contains("_exps") ? GgmlType.IQ1_S : n == "output.weight" ? GgmlType.Q6_K : GgmlType.Q4_K };
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-moe-routing");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model device = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend() });
        using Model host = ModelLoader.Load(file, new ModelOptions { Backend = _ => new HostRoutedBackend(new CudaBackend()) });
        (List<int> deviceTokens, List<float[]> deviceLogits) = TestData.GreedyContinuation(device, 17, 7, 20);
        (List<int> hostTokens, List<float[]> hostLogits) = TestData.GreedyContinuation(host, 17, 7, 20);
        string steps = string.Join(" ", deviceLogits.Select((l, i) => TestData.RelativeL2(l, hostLogits[i]).ToString("E1")));
        output.WriteLine($"{types}: device vs host routing per step: {steps}");
        Assert.Equal(hostTokens, deviceTokens);
        for (int i = 0; i < hostLogits.Count; i++)
            Assert.True(TestData.RelativeL2(deviceLogits[i], hostLogits[i]) < 1e-5, $"step {i}: {steps}");
    }

    /// <summary>A GPU backend without its own routing operations: the interface's host defaults run them.</summary>
    private sealed class HostRoutedBackend(CudaBackend gpu) : IComputeBackend
    {
        public int Threads => gpu.Threads;
        public void MatMul(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, int tokens) => gpu.MatMul(w, x, y, tokens);
        public void TransposedMatMulGroup(ReadOnlySpan<WeightMatrix> w, ReadOnlySpan<float> x, int xs, Span<float> y, int ys, int tokens, int xts, int yts) =>
            gpu.TransposedMatMulGroup(w, x, xs, y, ys, tokens, xts, yts);
        public void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int tokens, float epsilon) => gpu.RmsNorm(x, w, y, tokens, epsilon);
        public void Rope(Rope rope, Span<float> v, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition) =>
            gpu.Rope(rope, v, tokens, heads, rowStride, headStride, offset, firstPosition);
        public void SiluMul(Span<float> gate, ReadOnlySpan<float> up) => gpu.SiluMul(gate, up);
        public void Attention(ReadOnlySpan<float> q, KvLayerCache cache, Span<float> o, in AttentionShape shape, int firstPosition, int tokens) =>
            gpu.Attention(q, cache, o, shape, firstPosition, tokens);
        public void Attach(float[] buffer) => gpu.Attach(buffer);
        // Routing on the host reads back in every step, so no step can be recorded as a graph.
        public void BeginForward(int tokens, int endPosition, bool replayable) => gpu.BeginForward(tokens, endPosition, replayable: false);
        public bool EndForward(bool completed) => gpu.EndForward(completed);
        public void StoreRows(ReadOnlySpan<float> s, int ss, Span<float> d, int ds, int firstRow, int rows, int width) => gpu.StoreRows(s, ss, d, ds, firstRow, rows, width);
        public void ReadToHost(Span<float> values) => gpu.ReadToHost(values);
        public void WrittenOnHost(ReadOnlySpan<float> values) => gpu.WrittenOnHost(values);
        public void Embed(WeightMatrix table, ReadOnlySpan<int> tokens, Span<float> output) => gpu.Embed(table, tokens, output);
        public void Add(Span<float> x, ReadOnlySpan<float> y) => gpu.Add(x, y);
        public void AddBias(Span<float> rows, ReadOnlySpan<float> bias, int tokens) => gpu.AddBias(rows, bias, tokens);
        public void CopyRows(ReadOnlySpan<float> s, int ss, Span<float> d, int ds, int rows, int width) => gpu.CopyRows(s, ss, d, ds, rows, width);
        public void GatherRows(ReadOnlySpan<float> s, ReadOnlySpan<int> rows, Span<float> d, int width) => gpu.GatherRows(s, rows, d, width);
        public void AddScaledRows(Span<float> d, ReadOnlySpan<float> s, ReadOnlySpan<int> rows, ReadOnlySpan<float> scales, int width) =>
            gpu.AddScaledRows(d, s, rows, scales, width);
        public void Dispose() => gpu.Dispose();
    }

    private static List<float[]> Decode(Model model)
    {
        var random = new Random(9);
        InferenceSession session = model.CreateSession(64);
        var logits = new List<float[]> { model.Forward(session, Enumerable.Range(0, 12).Select(_ => random.Next(model.VocabSize)).ToArray()) };
        for (int step = 0; step < 10; step++) logits.Add(model.Forward(session, [random.Next(model.VocabSize)]));
        return logits;
    }
}
