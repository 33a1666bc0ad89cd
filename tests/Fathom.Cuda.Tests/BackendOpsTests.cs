using Fathom.Cpu;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>The backend's vector operations agree with <see cref="CpuBackend"/> on fresh random data.</summary>
public sealed class BackendOpsTests(GpuFixture gpu) : IDisposable
{
    private readonly CpuBackend _cpu = new(2);

    public void Dispose() => _cpu.Dispose();

    /// <summary>
    /// Many small matrices (a MoE layer's experts) share allocations instead of taking a 2 MiB driver page each (R1's
    /// 44,544 experts once ran an H200 out of memory that way), and each product still reads its own matrix.
    /// </summary>
    [Fact]
    public void SmallWeightsShareAllocationsAndKeepTheirOwnValues()
    {
        gpu.Require();
        using var cuda = new CudaBackend();
        var random = new Random(3);
        const int count = 300, rows = 40, columns = 256;
        var matrices = Enumerable.Range(0, count)
            .Select(i => WeightMatrix.FromFloats($"expert.{i}", TestData.Gaussian(random, rows * columns), rows, columns)).ToArray();
        float[] x = TestData.Gaussian(random, columns);
        foreach (WeightMatrix m in matrices)
        {
            float[] expected = new float[rows], actual = Enumerable.Repeat(float.NaN, rows).ToArray();
            _cpu.MatMul(m, x, expected, 1);
            cuda.MatMul(m, x, actual, 1);
            Assert.True(TestData.RelativeL2(actual, expected) < 1e-6, $"{m.Name}: relative L2 {TestData.RelativeL2(actual, expected):E2}");
        }
        long bytes = (long)count * rows * columns * sizeof(float); // 12.3 MB; one allocation each would be 600 MiB
        Assert.Equal(bytes, cuda.WeightBytes);
        Assert.True(cuda.WeightAllocatedBytes <= bytes + (32L << 20), $"{cuda.WeightAllocatedBytes} bytes allocated for {bytes}");
    }

    /// <summary>The read-bandwidth probe gives a figure a GPU can have: above PCIe speeds, below any HBM's peak.</summary>
    [Fact]
    public void ReadBandwidthIsAPlausibleDeviceFigure()
    {
        gpu.Require();
        double gbps = gpu.Backend.MeasureReadBandwidth();
        Assert.InRange(gbps, 50, 20_000);
    }

    [Fact]
    public void RmsNormMatchesTheCpu()
    {
        CudaBackend cuda = gpu.Backend;
        var random = new Random(1);
        foreach ((int tokens, int n) in new[] { (1, 256), (7, 1000), (3, 4096) })
        {
            float[] x = TestData.Gaussian(random, tokens * n, 3f), w = TestData.Gaussian(random, n);
            float[] expected = new float[tokens * n], actual = Enumerable.Repeat(float.NaN, tokens * n).ToArray();
            _cpu.RmsNorm(x, w, expected, tokens, 1e-6f);
            cuda.RmsNorm(x, w, actual, tokens, 1e-6f);
            Assert.True(TestData.RelativeL2(actual, expected) < 1e-6, $"{tokens}×{n}: relative L2 {TestData.RelativeL2(actual, expected):E2}");
        }
    }

    [Theory]
    [InlineData(RopeStyle.Normal, false)]
    [InlineData(RopeStyle.NeoX, false)]
    [InlineData(RopeStyle.NeoX, true)]
    public void RopeMatchesTheCpu(RopeStyle style, bool yarn)
    {
        CudaBackend cuda = gpu.Backend;
        var random = new Random((int)style * 2 + (yarn ? 1 : 0));
        var rope = new Rope(style, 64, 10000f, yarn ? 0.25f : 1f, yarn: yarn ? new YarnParameters(1024, 1.1f) : null);
        // MLA's layout: heads of 96 with the rotary part at offset 32, and a row stride with room to spare.
        int tokens = 5, heads = 3, headStride = 96, rowStride = heads * headStride + 16, offset = 32;
        float[] values = TestData.Gaussian(random, tokens * rowStride);
        float[] expected = (float[])values.Clone(), actual = (float[])values.Clone();
        _cpu.Rope(rope, expected, tokens, heads, rowStride, headStride, offset, 1234);
        cuda.Rope(rope, actual, tokens, heads, rowStride, headStride, offset, 1234);
        Assert.True(TestData.RelativeL2(actual, expected) < 1e-6, $"relative L2 {TestData.RelativeL2(actual, expected):E2}");
        // Elements outside the rotary slices are untouched.
        for (int i = 0; i < values.Length; i++)
            if ((i % rowStride) % headStride < offset || i % rowStride >= heads * headStride) Assert.Equal(values[i], actual[i]);
    }

    [Fact]
    public void SiluMulMatchesTheCpu()
    {
        CudaBackend cuda = gpu.Backend;
        var random = new Random(3);
        float[] gate = TestData.Gaussian(random, 3000, 4f), up = TestData.Gaussian(random, 3000);
        float[] expected = (float[])gate.Clone(), actual = (float[])gate.Clone();
        _cpu.SiluMul(expected, up);
        cuda.SiluMul(actual, up);
        Assert.True(TestData.RelativeL2(actual, expected) < 1e-6, $"relative L2 {TestData.RelativeL2(actual, expected):E2}");
    }

    [Theory]
    [InlineData(8, 2, 64, 64, false)]   // grouped-query attention
    [InlineData(4, 1, 96, 64, true)]    // MLA's absorbed form: one latent row is key and value
    public void AttentionMatchesTheCpuOverPrefillAndDecodeSteps(int heads, int kvHeads, int keyDim, int valueDim, bool shared)
    {
        CudaBackend cuda = gpu.Backend;
        var random = new Random(heads * 100 + keyDim);
        var shape = new AttentionShape(heads, kvHeads, keyDim, valueDim, 1f / MathF.Sqrt(keyDim));
        int capacity = 64;
        var cache = new KvLayerCache(capacity, kvHeads * keyDim, shared ? kvHeads * keyDim : kvHeads * valueDim, shared);
        int position = 0;
        // A prompt of 13, three single decode steps, then a batch of 6 continuing the same cache.
        foreach (int tokens in new[] { 13, 1, 1, 1, 6 })
        {
            for (int p = position; p < position + tokens; p++)
            {
                TestData.Gaussian(random, cache.KeyWidth, 2f).CopyTo(cache.KeyRow(p));
                if (!shared) TestData.Gaussian(random, cache.ValueWidth).CopyTo(cache.ValueRow(p));
            }
            float[] queries = TestData.Gaussian(random, tokens * heads * keyDim, 2f);
            float[] expected = new float[tokens * heads * valueDim], actual = Enumerable.Repeat(float.NaN, tokens * heads * valueDim).ToArray();
            _cpu.Attention(queries, cache, expected, shape, position, tokens);
            cuda.Attention(queries, cache, actual, shape, position, tokens);
            double error = TestData.RelativeL2(actual, expected);
            Assert.True(error < 1e-5, $"{tokens} tokens at {position}: relative L2 {error:E2}");
            position += tokens;
        }
    }

    [Fact]
    public void AttentionSeesRowsRewrittenAfterARewind()
    {
        CudaBackend cuda = gpu.Backend;
        var random = new Random(5);
        var shape = new AttentionShape(2, 2, 32, 32, 0.2f);
        var cache = new KvLayerCache(16, 64, 64, false);
        for (int p = 0; p < 8; p++)
        {
            TestData.Gaussian(random, 64).CopyTo(cache.KeyRow(p));
            TestData.Gaussian(random, 64).CopyTo(cache.ValueRow(p));
        }
        cuda.Attention(TestData.Gaussian(random, 8 * 64), cache, new float[8 * 64], shape, 0, 8);
        // The session rewinds to position 5 and writes new rows there: the GPU copy must follow.
        for (int p = 5; p < 8; p++)
        {
            TestData.Gaussian(random, 64).CopyTo(cache.KeyRow(p));
            TestData.Gaussian(random, 64).CopyTo(cache.ValueRow(p));
        }
        float[] q = TestData.Gaussian(random, 3 * 64);
        float[] expected = new float[3 * 64], actual = new float[3 * 64];
        _cpu.Attention(q, cache, expected, shape, 5, 3);
        cuda.Attention(q, cache, actual, shape, 5, 3);
        Assert.True(TestData.RelativeL2(actual, expected) < 1e-5);
    }
}
