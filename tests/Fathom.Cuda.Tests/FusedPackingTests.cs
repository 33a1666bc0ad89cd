using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// RMSNorm and SiLU·gate writing the packed input of the one-token integer product that follows them
/// (CudaBackend.Norms.cs): after one step that learns the product's format, the next steps pack in the norm's or SiLU's
/// kernel (<see cref="CudaBackend.FusedPackings"/> counts them), and the norm's output and the product equal those of
/// the unfused kernels bit for bit, so the fused codes and scales are pack_activations_*'s (the CPU's encoding, which
/// <see cref="IntegerMatVecTests"/> checks byte for byte); rows include a block of zeros and a block of equal
/// magnitudes (the first sets Q8_K's scale). A guess that turns out wrong (one norm feeding products of both packed
/// formats in turn) costs nothing but the packing. The vector norm (<c>rms_norm_rows</c>) agrees with the CPU on
/// model widths, in place, and the rows it does not take go to <c>rms_norm</c>. A decode step's wide norm
/// (<c>rms_norm_row_wide</c>, several blocks) writes the single block's row, codes and scales bit for bit.
/// </summary>
public sealed unsafe class FusedPackingTests(GpuFixture gpu) : IDisposable
{
    private const float Epsilon = 1e-6f;
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    // Weights live for the whole run: the GPU backend knows uploaded matrices by address.
    private static WeightMatrix Matrix(GgmlType type, int rows, int columns)
    {
        fixed (byte* p = TestData.KeptQuantizedRows(type, rows, columns, HashCode.Combine(type, rows, columns, 5)))
            return WeightMatrix.InPlace($"fused.{type}.{rows}x{columns}", type, p, rows, columns);
    }

    /// <summary>Gaussian values with a block of 256 zeros at 256 and, at 512, 256 values of equal magnitude (the first negative).</summary>
    private static float[] Row(Random random, int n)
    {
        float[] x = TestData.Gaussian(random, n, 3f);
        Array.Clear(x, 256, 256);
        for (int i = 512; i < 768; i++) x[i] = (i % 3 - 1) * 2.5f;
        return x;
    }

    /// <summary>Runs <paramref name="step"/> with fused packing on or off; restores the setting.</summary>
    private void With(bool fused, Action step)
    {
        CudaBackend backend = gpu.Backend;
        bool was = backend.FusedPacking;
        backend.FusedPacking = fused;
        try
        {
            step();
        }
        finally
        {
            backend.FusedPacking = was;
        }
    }

    private float[] Read(float[] attached)
    {
        gpu.Backend.ReadToHost(attached);
        return (float[])attached.Clone();
    }

    [Theory]
    [InlineData(GgmlType.Q4_K, 1536)] // Q8_K partner, Qwen-1.5B's width
    [InlineData(GgmlType.Q6_K, 7168)] // Q8_K, R1's width: two float4 per thread
    [InlineData(GgmlType.IQ1_S, 2048)] // Q8_K
    [InlineData(GgmlType.Q8_0, 1536)] // Q8_0 partner
    [InlineData(GgmlType.Q4_0, 5120)] // Q8_0, two float4 per thread
    public void NormPacksTheInputOfTheProductAfterIt(GgmlType type, int n)
    {
        CudaBackend backend = gpu.Backend;
        const int rows = 67;
        WeightMatrix matrix = Matrix(type, rows, n);
        var random = new Random(n + (int)type);
        float[] input = Row(random, n), weight = TestData.Gaussian(random, n);
        Array.Fill(weight, 1f, 512, 256); // the equal magnitudes stay equal
        float[] x = gpu.Attached(input), w = gpu.Attached(weight), h = gpu.Attached(new float[n]), y = gpu.Attached(new float[rows]);
        void Step()
        {
            backend.RmsNorm(x, w, h, 1, Epsilon);
            backend.MatMul(matrix, h, y, 1);
        }

        float[] plainNorm = [], plainProduct = [];
        With(false, () =>
        {
            Step(); // also teaches the backend the product's format
            plainNorm = Read(h);
            plainProduct = Read(y);
        });
        long before = backend.FusedPackings;
        for (int step = 0; step < 3; step++)
        {
            Array.Clear(y);
            backend.WrittenOnHost(y);
            With(true, Step);
            Assert.Equal(plainNorm, Read(h));
            Assert.Equal(plainProduct, Read(y));
        }
        Assert.Equal(3, backend.FusedPackings - before);

        float[] expectedNorm = new float[n], expectedProduct = new float[rows];
        _cpu.RmsNorm(input, weight, expectedNorm, 1, Epsilon);
        _cpu.MatMul(matrix, expectedNorm, expectedProduct, 1);
        Assert.True(TestData.RelativeL2(plainNorm, expectedNorm) < 1e-6, $"norm: relative L2 {TestData.RelativeL2(plainNorm, expectedNorm):E2}");
        Assert.True(TestData.RelativeL2(plainProduct, expectedProduct) <= 1e-5, $"product: relative L2 {TestData.RelativeL2(plainProduct, expectedProduct):E2}");
    }

    /// <summary>
    /// The wide one-token norm (<see cref="CudaBackend.WideNorms"/>) against <c>rms_norm_rows</c>' single block: the same
    /// normalized row and the same product after it (which reads the packed codes and scales the norm wrote) bit for bit,
    /// packed for Q8_K and Q8_0 partners and unpacked (an F32 product after it), on R1's, V3-Lite's, 2,048 and
    /// Qwen-1.5B's widths (below the default minimum, lowered here); a norm in place keeps the single block.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q6_K, 7168)] // Q8_K partner, R1's width: 7 blocks, two chunks in the single block
    [InlineData(GgmlType.Q8_0, 7168)] // Q8_0
    [InlineData(GgmlType.F32, 7168)] // no packing
    [InlineData(GgmlType.IQ1_S, 2048)] // Q8_K, 512 threads in the single block
    [InlineData(GgmlType.Q4_0, 5120)] // Q8_0, a part-filled second chunk
    [InlineData(GgmlType.Q4_K, 1536)] // Q8_K, 384 threads: a part-filled last wide block
    public void TheWideNormWritesTheSingleBlocksBits(GgmlType type, int n)
    {
        CudaBackend backend = gpu.Backend;
        const int rows = 37;
        WeightMatrix matrix = type == GgmlType.F32
            ? WeightMatrix.FromFloats($"wide.f32.{n}", TestData.Gaussian(new Random(n), rows * n), rows, n)
            : Matrix(type, rows, n);
        var random = new Random(3 * n + (int)type);
        float[] input = Row(random, n), weight = TestData.Gaussian(random, n);
        Array.Fill(weight, 1f, 512, 256);
        float[] x = gpu.Attached(input), w = gpu.Attached(weight), h = gpu.Attached(new float[n]), y = gpu.Attached(new float[rows]);
        bool wasWide = backend.WideNorms;
        int wasMinimum = backend.WideNormMinimumWidth;
        backend.WideNormMinimumWidth = Math.Min(wasMinimum, n);
        try
        {
            (float[] Norm, float[] Product) Run(bool wide)
            {
                backend.WideNorms = wide;
                long launches = backend.WideNormLaunches, packings = backend.FusedPackings;
                for (int step = 0; step < 3; step++) // the first step teaches the packing to a new norm weight
                {
                    Array.Fill(h, float.NaN);
                    Array.Clear(y);
                    backend.WrittenOnHost(h);
                    backend.WrittenOnHost(y);
                    With(true, () =>
                    {
                        backend.RmsNorm(x, w, h, 1, Epsilon);
                        backend.MatMul(matrix, h, y, 1);
                    });
                }
                Assert.Equal(wide ? 3 : 0, backend.WideNormLaunches - launches);
                Assert.Equal(type == GgmlType.F32 ? 0 : wide ? 3 : 2, backend.FusedPackings - packings);
                return (Read(h), Read(y));
            }

            (float[] singleNorm, float[] singleProduct) = Run(false);
            (float[] wideNorm, float[] wideProduct) = Run(true);
            Assert.Equal(singleNorm, wideNorm);
            Assert.Equal(singleProduct, wideProduct);

            float[] expected = new float[n];
            _cpu.RmsNorm(input, weight, expected, 1, Epsilon);
            Assert.True(TestData.RelativeL2(wideNorm, expected) < 1e-6, $"norm: relative L2 {TestData.RelativeL2(wideNorm, expected):E2}");

            long before = backend.WideNormLaunches;
            backend.RmsNorm(x, w, x, 1, Epsilon);
            Assert.Equal(before, backend.WideNormLaunches);
            Assert.Equal(singleNorm, Read(x));
        }
        finally
        {
            backend.WideNorms = wasWide;
            backend.WideNormMinimumWidth = wasMinimum;
        }
    }

    /// <summary>
    /// An R1-shaped model 2,048 wide (its attention, FFN and output norms take the wide kernel, MLA's q_a and latent
    /// norms in place the single block) decoded with <see cref="CudaBackend.WideNorms"/> on and off: the same greedy
    /// tokens and the same logits at every step, bit for bit, through recorded and replayed decode graphs.
    /// </summary>
    [Fact]
    public void AWideModelDecodesTheSameWithSingleBlockNorms()
    {
        gpu.Require();
        using var synthesized = new SynthesizedGguf(SyntheticPresets.TinyDeepSeekR1 with { HiddenSize = 2048 }, "fathom-cuda-wide-norms");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        CudaBackend? wideBackend = null;
        using Model wide = ModelLoader.Load(file, new ModelOptions { Backend = _ => wideBackend = new CudaBackend { WideNorms = true } });
        using Model single = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { WideNorms = false } });
        (List<int> wideTokens, List<float[]> wideLogits) = TestData.GreedyContinuation(wide, 29, 9, 24);
        (List<int> singleTokens, List<float[]> singleLogits) = TestData.GreedyContinuation(single, 29, 9, 24);
        Assert.True(wideBackend!.WideNormLaunches > 0, "no norm took the wide kernel");
        Assert.Equal(singleTokens, wideTokens);
        for (int i = 0; i < singleLogits.Count; i++)
            Assert.True(singleLogits[i].AsSpan().SequenceEqual(wideLogits[i]), $"step {i}: relative L2 {TestData.RelativeL2(wideLogits[i], singleLogits[i]):E2}");
    }

    /// <summary>A dense SiLU (the down product after it) and a MoE layer's (the chosen experts' down products, by device ids).</summary>
    [Theory]
    [InlineData(GgmlType.Q4_K, false)]
    [InlineData(GgmlType.Q8_0, false)]
    [InlineData(GgmlType.Q6_K, true)]
    [InlineData(GgmlType.Q5_0, true)]
    public void SiluPacksTheInputOfTheProductAfterIt(GgmlType type, bool experts)
    {
        CudaBackend backend = gpu.Backend;
        const int rows = 40, width = 1024, used = 3, count = 5;
        int values = experts ? used * width : width;
        WeightMatrix all = Matrix(type, experts ? count * rows : rows, width);
        WeightMatrix[] matrices = experts ? [.. Enumerable.Range(0, count).Select(i => all.SliceRows(i * rows, rows, $"fused.{type}[{i}]"))] : [all];
        var random = new Random(width + (int)type);
        float[] gateValues = Row(random, values), upValues = TestData.Gaussian(random, values);
        Array.Fill(upValues, 1f, 512, 256);
        float[] gate = gpu.Attached(gateValues), up = gpu.Attached(upValues), ids = gpu.Attached([3, 0, 4]);
        float[] y = gpu.Attached(new float[experts ? used * rows : rows]);
        void Step()
        {
            gateValues.CopyTo(gate, 0);
            backend.WrittenOnHost(gate);
            backend.SiluMul(gate, up);
            if (experts) backend.MatMulExperts(matrices, ids, gate, width, y, rows);
            else backend.MatMul(all, gate, y, 1);
        }

        float[] plainSilu = [], plainProduct = [];
        With(false, () =>
        {
            Step();
            plainSilu = Read(gate);
            plainProduct = Read(y);
        });
        long before = backend.FusedPackings;
        for (int step = 0; step < 2; step++)
        {
            With(true, Step);
            Assert.Equal(plainSilu, Read(gate));
            Assert.Equal(plainProduct, Read(y));
        }
        Assert.Equal(2, backend.FusedPackings - before);

        float[] expectedSilu = (float[])gateValues.Clone();
        _cpu.SiluMul(expectedSilu, upValues);
        Assert.True(TestData.RelativeL2(plainSilu, expectedSilu) < 1e-6, $"silu: relative L2 {TestData.RelativeL2(plainSilu, expectedSilu):E2}");
        for (int k = 0; k < (experts ? used : 1); k++)
        {
            float[] expected = new float[rows];
            _cpu.MatMul(matrices[experts ? (int)ids[k] : 0], expectedSilu.AsSpan(k * width, width), expected, 1);
            float[] actual = plainProduct.AsSpan(k * rows, rows).ToArray();
            Assert.True(TestData.RelativeL2(actual, expected) <= 1e-5, $"product {k}: relative L2 {TestData.RelativeL2(actual, expected):E2}");
        }
    }

    /// <summary>One norm feeding a Q8_0-partnered and a Q8_K-partnered product in turn: every guess is wrong, every result right.</summary>
    [Fact]
    public void AWrongGuessCostsOnlyThePacking()
    {
        CudaBackend backend = gpu.Backend;
        const int n = 2048, rows = 33;
        WeightMatrix q8 = Matrix(GgmlType.Q8_0, rows, n), q4k = Matrix(GgmlType.Q4_K, rows, n);
        var random = new Random(17);
        float[] input = Row(random, n), weight = TestData.Gaussian(random, n);
        float[] x = gpu.Attached(input), w = gpu.Attached(weight), h = gpu.Attached(new float[n]), y = gpu.Attached(new float[rows]);
        float[] normed = new float[n];
        _cpu.RmsNorm(input, weight, normed, 1, Epsilon);
        long before = 0;
        for (int step = 0; step < 4; step++)
        {
            WeightMatrix matrix = step % 2 == 0 ? q8 : q4k;
            With(step > 0, () => // the first step learns, unfused; each later one fuses the last step's format
            {
                backend.RmsNorm(x, w, h, 1, Epsilon);
                backend.MatMul(matrix, h, y, 1);
            });
            if (step == 0) before = backend.FusedPackings;
            float[] expected = new float[rows];
            _cpu.MatMul(matrix, normed, expected, 1);
            float[] actual = Read(y);
            Assert.True(TestData.RelativeL2(actual, expected) <= 1e-5, $"step {step} ({matrix.Format.Type}): relative L2 {TestData.RelativeL2(actual, expected):E2}");
        }
        Assert.Equal(3, backend.FusedPackings - before);
    }

    /// <summary>
    /// DeepSeek's FFN: the norm, then the F32 router (<c>matvec_f32_rows</c>, a block per row), then the shared expert's
    /// gate, an integer product: the norm's packing outlives the router's product and serves the gate. The router's
    /// product agrees with the CPU's and with matvec_f32, plain, biased and added to a residual.
    /// </summary>
    [Fact]
    public void APackingOutlivesAFloatProductBetween()
    {
        CudaBackend backend = gpu.Backend;
        const int n = 2048, experts = 64, rows = 48;
        var random = new Random(29);
        WeightMatrix router = WeightMatrix.FromFloats("fused.router", TestData.Gaussian(random, experts * n), experts, n);
        WeightMatrix gate = Matrix(GgmlType.Q4_K, rows, n);
        float[] input = Row(random, n), weight = TestData.Gaussian(random, n);
        float[] x = gpu.Attached(input), w = gpu.Attached(weight), h = gpu.Attached(new float[n]), logits = gpu.Attached(new float[experts]), y = gpu.Attached(new float[rows]);
        void Step()
        {
            backend.RmsNorm(x, w, h, 1, Epsilon);
            backend.MatMul(router, h, logits, 1);
            backend.MatMul(gate, h, y, 1);
        }

        float[] plainLogits = [], plainProduct = [];
        With(false, () =>
        {
            Step();
            plainLogits = Read(logits);
            plainProduct = Read(y);
        });
        long before = backend.FusedPackings;
        With(true, Step);
        Assert.Equal(1, backend.FusedPackings - before);
        Assert.Equal(plainLogits, Read(logits));
        Assert.Equal(plainProduct, Read(y));

        float[] normed = Read(h), expected = new float[experts];
        _cpu.MatMul(router, normed, expected, 1);
        Assert.True(TestData.RelativeL2(plainLogits, expected) < 1e-6, $"router: relative L2 {TestData.RelativeL2(plainLogits, expected):E2}");
        float[] bias = TestData.Gaussian(random, experts), residual = TestData.Gaussian(random, experts);
        float[] expectedBiased = new float[experts], biased = new float[experts];
        _cpu.MatMulGroup([router], normed, 0, expectedBiased, 0, [bias]);
        backend.MatMulGroup([router], normed, 0, biased, 0, [bias]);
        Assert.True(TestData.RelativeL2(biased, expectedBiased) < 1e-6, $"router + bias: relative L2 {TestData.RelativeL2(biased, expectedBiased):E2}");
        float[] expectedSum = (float[])residual.Clone(), sum = (float[])residual.Clone(), product = new float[experts];
        _cpu.MatMulResidual(router, normed, expectedSum, product, 1);
        backend.MatMulResidual(router, normed, sum, product, 1);
        Assert.True(TestData.RelativeL2(sum, expectedSum) < 1e-6, $"router + residual: relative L2 {TestData.RelativeL2(sum, expectedSum):E2}");
        float[] oldKernel = new float[experts];
        backend.FloatRowProducts = false;
        try
        {
            backend.MatMul(router, normed, oldKernel, 1);
        }
        finally
        {
            backend.FloatRowProducts = true;
        }
        Assert.True(TestData.RelativeL2(plainLogits, oldKernel) < 1e-6, $"matvec_f32_rows vs matvec_f32: relative L2 {TestData.RelativeL2(plainLogits, oldKernel):E2}");
        Assert.False(plainLogits.AsSpan().SequenceEqual(oldKernel), "matvec_f32_rows gave matvec_f32's bits exactly; was it used?");
    }

    /// <summary>
    /// Widths of the models (896 to 7168), one and several rows, rows longer than <c>rms_norm_rows</c> takes (16,400)
    /// and rows not of whole float4 (1,538), on staged arrays and in place on an attached buffer (MLA's q_a norm).
    /// </summary>
    [Fact]
    public void NormsMatchTheCpuInPlaceAndForEveryWidth()
    {
        CudaBackend backend = gpu.Backend;
        var random = new Random(23);
        foreach ((int tokens, int n) in new[] { (1, 896), (1, 1536), (1, 7168), (4, 5120), (2, 16400), (3, 1538), (1, 18432) })
        {
            float[] x = TestData.Gaussian(random, tokens * n, 3f), w = TestData.Gaussian(random, n);
            float[] expected = new float[tokens * n], actual = Enumerable.Repeat(float.NaN, tokens * n).ToArray();
            _cpu.RmsNorm(x, w, expected, tokens, Epsilon);
            backend.RmsNorm(x, w, actual, tokens, Epsilon);
            Assert.True(TestData.RelativeL2(actual, expected) < 1e-6, $"{tokens}×{n}: relative L2 {TestData.RelativeL2(actual, expected):E2}");

            float[] inPlace = gpu.Attached(x), weight = gpu.Attached(w);
            backend.RmsNorm(inPlace, weight, inPlace, tokens, Epsilon);
            backend.ReadToHost(inPlace);
            Assert.True(TestData.RelativeL2(inPlace, expected) < 1e-6, $"{tokens}×{n} in place: relative L2 {TestData.RelativeL2(inPlace, expected):E2}");
        }
    }
}
