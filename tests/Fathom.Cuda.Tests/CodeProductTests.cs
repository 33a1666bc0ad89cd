using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Prompt products on integer codes (Kernels/mmq.cu, <see cref="CudaBackend.CodeProducts"/>) and a prompt's routed
/// experts grouped on the device (<see cref="CudaBackend.AddRoutedExperts"/>): each product equals the float64 dot of
/// the CPU's operands (its dequantized weights, its rounded activations) within FP32 sums, and the CPU backend's own
/// product within 1e-5, at token counts from 1 to 600 and row counts that fill no whole tile; the device grouping adds
/// what the host grouping adds, on the GPU and on the CPU; whole models give the host grouping's logits.
/// </summary>
public sealed unsafe class CodeProductTests(GpuFixture gpu, ITestOutputHelper output) : IDisposable
{
    private readonly CpuBackend _cpu = new(2);

    public void Dispose() => _cpu.Dispose();

    // Weight arrays live for the whole run: the GPU backend knows uploaded matrices by address.
    private static readonly List<byte[]> KeptWeights = [];

    private static byte[] Quantized(Random random, GgmlType type, int rows, int columns)
    {
        WeightFormat format = TypeTraits.For(type);
        byte[] bytes = GC.AllocateArray<byte>(rows * (int)format.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, format, rows, columns).CopyTo(bytes, 0);
        lock (KeptWeights) KeptWeights.Add(bytes);
        return bytes;
    }

    public static TheoryData<GgmlType, int, int, int, CodeTileShape, bool, bool> ProductCases()
    {
        var cases = new TheoryData<GgmlType, int, int, int, CodeTileShape, bool, bool>();
        (GgmlType, int, int, int)[] shapes =
        [
            (GgmlType.Q4_K, 200, 512, 1), (GgmlType.Q4_K, 130, 768, 45), (GgmlType.Q4_K, 64, 256, 600),
            (GgmlType.Q6_K, 97, 512, 33), (GgmlType.Q6_K, 72, 256, 7),
            (GgmlType.Q8_0, 100, 320, 37), (GgmlType.Q8_0, 66, 96, 600),
            (GgmlType.IQ2_XXS, 90, 512, 45), (GgmlType.IQ2_XXS, 64, 256, 2),
            (GgmlType.IQ1_S, 150, 512, 600), (GgmlType.IQ1_S, 65, 256, 31),
        ];
        foreach ((GgmlType type, int rows, int columns, int tokens) in shapes)
        {
            cases.Add(type, rows, columns, tokens, CodeTileShape.Small, true, false);
            cases.Add(type, rows, columns, tokens, CodeTileShape.Small, false, false);
            foreach (bool pipelined in (bool[])[false, true])
            {
                cases.Add(type, rows, columns, tokens, CodeTileShape.Rows64, true, pipelined);
                cases.Add(type, rows, columns, tokens, CodeTileShape.Rows128, true, pipelined);
            }
        }
        return cases;
    }

    [Theory]
    [MemberData(nameof(ProductCases))]
    public void ProductsOnCodesMatchTheCpu(GgmlType type, int rows, int columns, int tokens, CodeTileShape tiles, bool folded, bool pipelined)
    {
        CudaBackend backend = gpu.Backend;
        (bool wasFolded, CodeTileShape wasTiles, bool wasPipelined) = (backend.FoldedCodeScales, backend.CodeTiles, backend.PipelinedCodeTiles);
        (backend.FoldedCodeScales, backend.CodeTiles, backend.PipelinedCodeTiles) = (folded, tiles, pipelined);
        try
        {
            ProductOnCodesMatchesTheCpu(backend, type, rows, columns, tokens, tiles, folded, pipelined);
        }
        finally
        {
            (backend.FoldedCodeScales, backend.CodeTiles, backend.PipelinedCodeTiles) = (wasFolded, wasTiles, wasPipelined);
        }
    }

    private void ProductOnCodesMatchesTheCpu(CudaBackend backend, GgmlType type, int rows, int columns, int tokens, CodeTileShape tiles, bool folded, bool pipelined)
    {
        Assert.True(backend.MultipliesCodes(type), $"{type}: no products on codes on {backend.Device.Name} ({backend.Device.ComputeCapability})");
        WeightFormat format = TypeTraits.For(type);
        var random = new Random(1000 * (int)type + 7 * rows + 3 * columns + tokens + (folded ? 1 : 0) + 10 * (int)tiles + (pipelined ? 100 : 0));
        byte[] weights = Quantized(random, type, rows, columns);
        float[] x = TestData.Gaussian(random, tokens * columns, 2f);
        var w = new float[rows * columns];
        format.Dequantize(weights, w);
        float[] activations = RoundedAsTheCpu(format, x);

        float[] y = Enumerable.Repeat(float.NaN, tokens * rows).ToArray(), cpu = new float[tokens * rows];
        fixed (byte* p = weights)
        {
            WeightMatrix matrix = WeightMatrix.InPlace($"codes.{type}.{rows}.{columns}.{tokens}.{tiles}.{folded}.{pipelined}", type, p, rows, columns);
            backend.MatMulCodes(matrix, x, y, tokens);
            _cpu.MatMul(matrix, x, cpu, tokens);
        }
        for (int t = 0; t < tokens; t++)
        for (int r = 0; r < rows; r++)
        {
            double dot = 0, magnitude = 0;
            for (int k = 0; k < columns; k++)
            {
                double product = (double)w[r * columns + k] * activations[t * columns + k];
                dot += product;
                magnitude += Math.Abs(product);
            }
            float got = y[t * rows + r];
            Assert.True(Math.Abs(got - dot) <= 1e-5 * magnitude, $"{type} {rows}×{columns}, {tokens} tokens, {tiles} tiles, folded {folded}, pipelined {pipelined}: [{t}, {r}] GPU {got}, operand dot {dot}, Σ|w·x| {magnitude}");
        }
        double error = TestData.RelativeL2(y, cpu);
        Assert.True(error <= 1e-5, $"{type} {rows}×{columns}, {tokens} tokens, {tiles} tiles, folded {folded}, pipelined {pipelined}: relative L2 {error:E2} against the CPU backend");
    }

    /// <summary>Products sharing an input reuse its codes only while it is unchanged (here: until a product overwrites it).</summary>
    [Fact]
    public void ProductsSharingAnInputReuseItsCodesOnlyWhileItIsUnchanged()
    {
        CudaBackend backend = gpu.Backend;
        int rows = 256, columns = 256, tokens = CudaBackend.BlasMinimumTokens + 3;
        var random = new Random(71);
        byte[] a = Quantized(random, GgmlType.Q4_K, rows, columns), b = Quantized(random, GgmlType.Q4_K, rows, columns);
        float[] buffer = GC.AllocateArray<float>(3 * tokens * columns, pinned: true);
        TestData.Gaussian(random, tokens * columns).CopyTo(buffer, 0);
        float[] input = buffer[..(tokens * columns)];
        float[] first = new float[tokens * rows], second = new float[tokens * rows], replaced = new float[tokens * rows], fourth = new float[tokens * rows];
        fixed (byte* pa = a, pb = b)
        {
            WeightMatrix ma = WeightMatrix.InPlace("codes.reuse.a", GgmlType.Q4_K, pa, rows, columns);
            WeightMatrix mb = WeightMatrix.InPlace("codes.reuse.b", GgmlType.Q4_K, pb, rows, columns);
            _cpu.MatMul(ma, input, first, tokens);
            _cpu.MatMul(mb, input, second, tokens);
            _cpu.MatMul(ma, input, replaced, tokens);
            _cpu.MatMul(mb, replaced, fourth, tokens);

            backend.Attach(buffer);
            bool wasCodes = backend.CodeProducts;
            backend.CodeProducts = true;
            try
            {
            Span<float> x = buffer.AsSpan(0, tokens * columns), y1 = buffer.AsSpan(tokens * columns, tokens * rows), y2 = buffer.AsSpan(2 * tokens * columns, tokens * rows);
            backend.MatMul(ma, x, y1, tokens);
            backend.MatMul(mb, x, y2, tokens); // the same input: its codes are reused
            backend.ReadToHost(buffer);
            Assert.True(TestData.RelativeL2(y1, first) <= 1e-5, $"first: {TestData.RelativeL2(y1, first):E2}");
            Assert.True(TestData.RelativeL2(y2, second) <= 1e-5, $"second: {TestData.RelativeL2(y2, second):E2}");
            backend.MatMul(ma, x, x, tokens);  // written over its own input
            backend.MatMul(mb, x, y2, tokens); // the same address, new values: quantized anew
            backend.ReadToHost(buffer);
            Assert.True(TestData.RelativeL2(x, replaced) <= 1e-5, $"in place: {TestData.RelativeL2(x, replaced):E2}");
            Assert.True(TestData.RelativeL2(y2, fourth) < 4e-3, $"after the overwrite: {TestData.RelativeL2(y2, fourth):E2}");
            }
            finally
            {
                backend.CodeProducts = wasCodes;
            }
        }
    }

    /// <summary>
    /// The device grouping against the host grouping (<see cref="ExpertBatch.AddByExpert"/>) on the same GPU and on the
    /// CPU. With 120 tokens or more every chosen expert gets at least <see cref="CudaBackend.BlasMinimumTokens"/> of
    /// them, so the host grouping's products (code products here) run the device grouping's kernel and the sums agree
    /// to the last bits; with fewer, its small products use the tile kernel. Against those and the CPU the bound is
    /// 1e-3: the SiLU output is rounded to Q8 codes before the down product on every path, and a last-bit difference in
    /// a gate or up moves such a rounding by one step now and then, which changes that pair's down product by up to
    /// about 1e-3 (run ppmoe-2 saw 5e-5 over a whole batch).
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_K, GgmlType.Q6_K, 1, CodeTileShape.Automatic, true, true)]
    [InlineData(GgmlType.Q4_K, GgmlType.Q6_K, 300, CodeTileShape.Automatic, true, true)]
    [InlineData(GgmlType.Q4_K, GgmlType.Q6_K, 300, CodeTileShape.Automatic, true, false)]
    [InlineData(GgmlType.Q4_K, GgmlType.Q6_K, 300, CodeTileShape.Small, true, false)]
    [InlineData(GgmlType.Q4_K, GgmlType.Q6_K, 300, CodeTileShape.Small, false, false)]
    [InlineData(GgmlType.IQ1_S, GgmlType.IQ2_XXS, 37, CodeTileShape.Automatic, true, true)]
    [InlineData(GgmlType.IQ1_S, GgmlType.IQ2_XXS, 150, CodeTileShape.Rows128, true, true)]
    [InlineData(GgmlType.IQ1_S, GgmlType.IQ2_XXS, 150, CodeTileShape.Rows128, true, false)]
    [InlineData(GgmlType.IQ1_S, GgmlType.IQ2_XXS, 150, CodeTileShape.Small, false, false)]
    [InlineData(GgmlType.Q8_0, GgmlType.Q8_0, 130, CodeTileShape.Automatic, true, true)]
    public void RoutedExpertsOnTheDeviceAddWhatTheHostGroupingAdds(GgmlType gateType, GgmlType downType, int tokens, CodeTileShape tiles, bool folded, bool pipelined)
    {
        CudaBackend backend = gpu.Backend;
        (bool wasFolded, bool wasCodes, CodeTileShape wasTiles, bool wasPipelined) = (backend.FoldedCodeScales, backend.CodeProducts, backend.CodeTiles, backend.PipelinedCodeTiles);
        (backend.FoldedCodeScales, backend.CodeProducts, backend.CodeTiles, backend.PipelinedCodeTiles) = (folded, true, tiles, pipelined);
        try
        {
            RoutedExpertsAddWhatTheHostGroupingAdds(backend, gateType, downType, tokens, tiles, folded, pipelined);
        }
        finally
        {
            (backend.FoldedCodeScales, backend.CodeProducts, backend.CodeTiles, backend.PipelinedCodeTiles) = (wasFolded, wasCodes, wasTiles, wasPipelined);
        }
    }

    private void RoutedExpertsAddWhatTheHostGroupingAdds(CudaBackend backend, GgmlType gateType, GgmlType downType, int tokens, CodeTileShape tiles, bool folded, bool pipelined)
    {
        const int experts = 16, used = 4, width = 256, expertWidth = 512;
        var random = new Random(1000 * (int)gateType + 2 * tokens + (folded ? 1 : 0) + 10 * (int)tiles + (pipelined ? 100 : 0));
        string name = $"moe.{tokens}.{tiles}.{folded}.{pipelined}";
        WeightMatrix[] gate = Experts(random, gateType, experts, expertWidth, width, $"{name}.{gateType}.gate");
        WeightMatrix[] up = Experts(random, gateType, experts, expertWidth, width, $"{name}.{gateType}.up");
        WeightMatrix[] down = Experts(random, downType, experts, width, expertWidth, $"{name}.{downType}.down");
        // Each token's experts ascending, as the routing leaves them; the last expert is never chosen. From 120 tokens,
        // token t takes t, t + 3, t + 7 and t + 11 (mod 15), so each of the 15 gets at least 32 tokens; below, the
        // first of a token's experts is one of the first three.
        bool everyExpertLarge = tokens >= 120;
        var ids = new float[tokens * used];
        for (int t = 0; t < tokens; t++)
        {
            SortedSet<int> chosen = everyExpertLarge ? [t % 15, (t + 3) % 15, (t + 7) % 15, (t + 11) % 15] : [random.Next(3)];
            while (chosen.Count < used) chosen.Add(random.Next(experts - 1));
            chosen.Select(e => (float)e).ToArray().CopyTo(ids, t * used);
        }
        if (everyExpertLarge)
            Assert.All(Enumerable.Range(0, experts - 1), e => Assert.True(ids.Count(id => id == e) >= CudaBackend.BlasMinimumTokens));
        float[] weights = TestData.Gaussian(random, tokens * used, 0.5f);
        float[] h = TestData.Gaussian(random, tokens * width, 1.5f);
        float[] start = TestData.Gaussian(random, tokens * width);
        float[] work = new float[ExpertBatch.WorkLength(tokens, width, expertWidth, used)];

        float[] device = (float[])start.Clone(), hostGrouped = (float[])start.Clone(), cpu = (float[])start.Clone();
        backend.AddRoutedExperts(gate, up, down, ids, weights, used, h, device, tokens, work);
        ExpertBatch.AddByExpert(backend, gate, up, down, ids, weights, used, h, hostGrouped, tokens, work);
        ExpertBatch.AddByExpert(_cpu, gate, up, down, ids, weights, used, h, cpu, tokens, work);

        double againstHost = RelativeL2OfAdded(device, hostGrouped, start), againstCpu = RelativeL2OfAdded(device, cpu, start);
        output.WriteLine($"{gateType}/{downType}, {tokens} tokens, {tiles} tiles, folded {folded}, pipelined {pipelined}: device grouping against the GPU's host grouping {againstHost:E2}, against the CPU {againstCpu:E2}");
        double hostBound = everyExpertLarge ? 1e-6 : 1e-3;
        Assert.True(againstHost <= hostBound, $"against the host grouping on the GPU: {againstHost:E2} > {hostBound:E0}");
        Assert.True(againstCpu <= 1e-3, $"against the CPU: {againstCpu:E2}");
    }

    private static WeightMatrix[] Experts(Random random, GgmlType type, int count, int rows, int columns, string name)
    {
        byte[] bytes = Quantized(random, type, count * rows, columns);
        fixed (byte* p = bytes)
        {
            WeightMatrix all = WeightMatrix.InPlace(name, type, p, count * rows, columns);
            return [.. Enumerable.Range(0, count).Select(i => all.SliceRows(i * rows, rows, $"{name}[{i}]"))];
        }
    }

    /// <summary>Relative L2 of what was added to <paramref name="start"/>: ‖(a − s) − (b − s)‖ / ‖b − s‖.</summary>
    private static double RelativeL2OfAdded(float[] a, float[] b, float[] start)
    {
        double diff = 0, norm = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double added = (double)b[i] - start[i], d = (double)a[i] - b[i];
            diff += d * d;
            norm += added * added;
        }
        return Math.Sqrt(diff / norm);
    }

    public static TheoryData<string> MoeModels => new() { "v3-q4_k-q6_k", "r1-iq1_s-mix" };

    /// <summary>
    /// A V3-shaped model (64 experts, 6 used, groups, Q4_K experts with Q6_K downs) and an R1-kind one (IQ1_S experts,
    /// IQ2_XXS downs): a 40-token prompt and a few decode steps with the routed experts grouped on the device and on
    /// the host give the same greedy tokens and logits within 1e-5 (the products' FP32 sums differ in order only).
    /// </summary>
    [Theory]
    [MemberData(nameof(MoeModels))]
    public void ModelsGiveTheHostGroupingsLogits(string model)
    {
        gpu.Require();
        SyntheticModelSpec spec = model == "v3-q4_k-q6_k"
            ? ModelAgreementTests.V3EightLayerShape with { TypeFor = n => n.Contains("ffn_down_exps") || n == "output.weight" ? GgmlType.Q6_K : GgmlType.Q4_K }
            : SyntheticPresets.TinyDeepSeekR1 with { VocabSize = 512, WeightScale = 1f };
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-moe-prompt");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        // Both with dense code products and folded scales (run ppmoe-2's settings), so only the grouping differs, and
        // with the tiled prompt attention: with the attention on cuBLAS products the two groupings' last-bit
        // differences in the R1-kind model's prompt (1.2e-7) came out as 1.8e-5 at its fourth decode step (run 39,
        // the same with every other switch; 0.0 at every step with the tiled kernel or small code tiles): at weight
        // scale 1 its attention is nearly one-hot, so a cached row that differs in its last bits changes nothing
        // until a step attends to it, and then the amplifying layers blow it up. The products
        // synthesized.Path is checked against the CPU by PrefillAttentionTests and ModelAgreementTests.
        using Model device = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { DeviceExpertGrouping = true, CodeProducts = true, FoldedCodeScales = true, PrefillAttentionProducts = false } });
        using Model host = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { DeviceExpertGrouping = false, CodeProducts = true, FoldedCodeScales = true, PrefillAttentionProducts = false } });
        (List<int> deviceTokens, List<float[]> deviceLogits) = TestData.GreedyContinuation(device, 29, 40, 44);
        (List<int> hostTokens, List<float[]> hostLogits) = TestData.GreedyContinuation(host, 29, 40, 44);
        string steps = string.Join(" ", deviceLogits.Select((l, i) => TestData.RelativeL2(l, hostLogits[i]).ToString("E1")));
        output.WriteLine($"{model}: device vs host grouping per step (the prompt first): {steps}");
        Assert.Equal(hostTokens, deviceTokens);
        for (int i = 0; i < hostLogits.Count; i++)
            Assert.True(TestData.RelativeL2(deviceLogits[i], hostLogits[i]) <= 1e-5, $"step {i}: {steps}");
    }

    /// <summary>The activations as the CPU multiplies them: encoded in the weight's partner format and decoded.</summary>
    private static float[] RoundedAsTheCpu(WeightFormat format, float[] x)
    {
        WeightFormat activations = TypeTraits.For(format.DotActivationType);
        var encoded = new byte[activations.Layout.RowBytes(x.Length)];
        activations.Quantize(x, encoded, []);
        var rounded = new float[x.Length];
        activations.Dequantize(encoded, rounded);
        return rounded;
    }
}
