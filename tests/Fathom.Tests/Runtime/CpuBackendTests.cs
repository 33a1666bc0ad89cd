using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Tests.Runtime;

/// <summary>The CPU kernels against plain double-precision loops written from the definitions.</summary>
public sealed class CpuBackendTests
{
    internal static float[] Random(int n, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();
    }

    internal static unsafe (WeightMatrix Matrix, byte[] Bytes) Quantized(GgmlType type, float[] values, int rows, int columns)
    {
        WeightFormat format = TypeTraits.For(type);
        long rowBytes = format.Layout.RowBytes(columns);
        byte[] bytes = GC.AllocateArray<byte>(checked((int)(rowBytes * rows)), pinned: true);
        float[] importance = format.RequiresImportance ? Enumerable.Repeat(1f, columns).ToArray() : [];
        for (int r = 0; r < rows; r++)
            format.Quantize(values.AsSpan(r * columns, columns), bytes.AsSpan((int)(r * rowBytes), (int)rowBytes), importance);
        fixed (byte* p = bytes)
            return (WeightMatrix.InPlace("w", type, p, rows, columns), bytes);
    }

    [Theory]
    [InlineData(GgmlType.F32, 1)]
    [InlineData(GgmlType.F32, 3)]
    [InlineData(GgmlType.F16, 2)]
    [InlineData(GgmlType.Q8_0, 2)]
    [InlineData(GgmlType.Q4_0, 3)]
    [InlineData(GgmlType.Q5_0, 2)]
    [InlineData(GgmlType.Q4_K, 2)]
    [InlineData(GgmlType.Q6_K, 2)]
    [InlineData(GgmlType.IQ1_S, 2)]
    [InlineData(GgmlType.IQ2_XXS, 2)]
    public void MatMulEqualsRowDotsOfTheDequantizedWeightWithTheQuantizedActivation(GgmlType type, int threads)
    {
        const int rows = 37, columns = 768, tokens = 5;
        (WeightMatrix w, byte[] keep) = Quantized(type, Random(rows * columns, 1), rows, columns);
        float[] x = Random(tokens * columns, 2, 3f);
        float[] y = new float[tokens * rows];
        using var backend = new CpuBackend(threads);
        backend.MatMul(w, x, y, tokens);

        // Reference: what the activation becomes in the weight's activation format, dequantized, times the
        // dequantized weight, in double.
        WeightFormat act = TypeTraits.For(w.Format.DotActivationType);
        var row = new float[columns];
        var xq = new float[columns];
        var actBytes = new byte[act.Layout.RowBytes(columns)];
        for (int t = 0; t < tokens; t++)
        {
            act.Quantize(x.AsSpan(t * columns, columns), actBytes, []);
            act.Dequantize(actBytes, xq);
            for (int r = 0; r < rows; r++)
            {
                w.DequantizeRow(r, row);
                double expected = 0, magnitude = 0;
                for (int i = 0; i < columns; i++) { expected += (double)row[i] * xq[i]; magnitude += Math.Abs((double)row[i] * xq[i]); }
                Assert.True(Math.Abs(y[t * rows + r] - expected) <= 1e-5 * magnitude + 1e-6,
                    $"{type} token {t} row {r}: {y[t * rows + r]} vs {expected}; direct dots: " +
                    string.Join(", ", w.Format.ImplementedPaths.Select(p => $"{p} {w.Format.Dot(w.Row(r), actBytes, columns, p)}")));
            }
        }
        GC.KeepAlive(keep);
    }

    [Fact]
    public void MatMulResultDoesNotDependOnThreadCount()
    {
        const int rows = 301, columns = 64, tokens = 4;
        (WeightMatrix w, byte[] keep) = Quantized(GgmlType.Q8_0, Random(rows * columns, 3), rows, columns);
        float[] x = Random(tokens * columns, 4);
        float[] one = new float[tokens * rows], four = new float[tokens * rows];
        using (var b = new CpuBackend(1)) b.MatMul(w, x, one, tokens);
        using (var b = new CpuBackend(4)) b.MatMul(w, x, four, tokens);
        Assert.Equal(one, four);
        GC.KeepAlive(keep);
    }

    [Fact]
    public void RmsNormMatchesDefinition()
    {
        const int n = 96, tokens = 3;
        float[] x = Random(n * tokens, 5, 4f), weight = Random(n, 6), y = new float[n * tokens];
        using var backend = new CpuBackend(1);
        backend.RmsNorm(x, weight, y, tokens, 1e-6f);
        for (int t = 0; t < tokens; t++)
        {
            double ms = 0;
            for (int i = 0; i < n; i++) ms += (double)x[t * n + i] * x[t * n + i];
            double inv = 1 / Math.Sqrt(ms / n + 1e-6);
            for (int i = 0; i < n; i++) Assert.Equal(x[t * n + i] * inv * weight[i], y[t * n + i], 1e-5);
        }
    }

    [Theory]
    [InlineData(RopeStyle.Normal)]
    [InlineData(RopeStyle.NeoX)]
    public void RopeRotatesThePairsOfItsStyleByPositionTimesFrequency(RopeStyle style)
    {
        const int headDim = 16, rotated = 12, heads = 3, tokens = 4, first = 5;
        var rope = new Rope(style, rotated, 10000f);
        float[] x = Random(tokens * heads * headDim, 7), y = (float[])x.Clone();
        using var backend = new CpuBackend(1);
        backend.Rope(rope, y, tokens, heads, heads * headDim, headDim, 0, first);
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
            {
                int o = (t * heads + h) * headDim;
                for (int i = 0; i < rotated / 2; i++)
                {
                    double angle = (first + t) * Math.Pow(10000.0, -2.0 * i / rotated);
                    (int a, int b) = style == RopeStyle.Normal ? (2 * i, 2 * i + 1) : (i, i + rotated / 2);
                    double ya = x[o + a] * Math.Cos(angle) - x[o + b] * Math.Sin(angle);
                    double yb = x[o + a] * Math.Sin(angle) + x[o + b] * Math.Cos(angle);
                    Assert.Equal(ya, y[o + a], 1e-4);
                    Assert.Equal(yb, y[o + b], 1e-4);
                }
                for (int i = rotated; i < headDim; i++) Assert.Equal(x[o + i], y[o + i]); // the rest passes through
            }
    }

    [Fact]
    public void RopeFrequencyFactorsDivideTheAngles()
    {
        float[] factors = [1f, 2f, 4f, 8f];
        var plain = new Rope(RopeStyle.Normal, 8, 500000f);
        var scaled = new Rope(RopeStyle.Normal, 8, 500000f, 1f, factors);
        Span<float> c1 = stackalloc float[4], s1 = stackalloc float[4], c2 = stackalloc float[4], s2 = stackalloc float[4];
        scaled.Angles(12, c2, s2);
        for (int i = 0; i < 4; i++)
        {
            double angle = 12 * Math.Pow(500000.0, -2.0 * i / 8) / factors[i];
            Assert.Equal(Math.Cos(angle), c2[i], 1e-5);
            Assert.Equal(Math.Sin(angle), s2[i], 1e-5);
        }
        plain.Angles(12, c1, s1);
        Assert.Equal(c1[0], c2[0]);
    }

    [Fact]
    public void YarnInterpolatesLowFrequenciesAndKeepsHighOnes()
    {
        // factor 4 over an original context of 64: the fastest pair extrapolates (angle unchanged), the slowest
        // interpolates (angle / 4), and every value is scaled by the attention factor times YaRN's 1 + 0.1·ln 4.
        var yarn = new Rope(RopeStyle.Normal, 32, 10000f, 0.25f, null, new YarnParameters(64, 1.5f));
        Span<float> cos = stackalloc float[16], sin = stackalloc float[16];
        yarn.Angles(10, cos, sin);
        double magnitude = 1.5 * (1 + 0.1 * Math.Log(4));
        Assert.Equal(Math.Cos(10.0) * magnitude, cos[0], 1e-5);
        double slowest = 10 * Math.Pow(10000.0, -30.0 / 32) / 4;
        Assert.Equal(Math.Sin(slowest) * magnitude, sin[15], 1e-5);
    }

    [Theory]
    [InlineData(4, 2, 8, 6, 3, 2, true)]     // per (token, head): value width not whole 16-float chunks
    [InlineData(4, 2, 8, 6, 1, 5, true)]     // decoding, one token
    [InlineData(12, 2, 16, 32, 21, 3, true)] // batched: groups of 6 heads, a short last quad, two token blocks
    [InlineData(12, 2, 16, 32, 21, 3, false)] // the same through the per (token, head) reference
    [InlineData(12, 2, 16, 32, 1, 7, true)]  // decoding through the vector kernel of one query
    [InlineData(3, 3, 24, 16, 5, 0, true)]   // batched, no head sharing, from position 0
    public void AttentionIsCausalSoftmaxWeightedValuesWithSharedKvHeads(int heads, int kvHeads, int dk, int dv, int tokens, int first, bool tiles)
    {
        const float scale = 0.7f;
        var cache = new KvLayerCache(first + tokens + 3, kvHeads * dk, kvHeads * dv, valuesShareKeys: false);
        float[] keys = Random((first + tokens) * kvHeads * dk, 8), values = Random((first + tokens) * kvHeads * dv, 9);
        keys.CopyTo(cache.Keys, 0);
        values.CopyTo(cache.Values, 0);
        float[] q = Random(tokens * heads * dk, 10, 2f), o = new float[tokens * heads * dv];
        using var backend = new CpuBackend(2, tiles);
        backend.Attention(q, cache, o, new AttentionShape(heads, kvHeads, dk, dv, scale), first, tokens);
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
            {
                int kv = h / (heads / kvHeads), visible = first + t + 1;
                var s = new double[visible];
                for (int p = 0; p < visible; p++)
                    for (int i = 0; i < dk; i++) s[p] += (double)q[(t * heads + h) * dk + i] * keys[p * kvHeads * dk + kv * dk + i] * scale;
                double max = s.Max(), sum = s.Sum(v => Math.Exp(v - max));
                for (int j = 0; j < dv; j++)
                {
                    double expected = 0;
                    for (int p = 0; p < visible; p++) expected += Math.Exp(s[p] - max) / sum * values[p * kvHeads * dv + kv * dv + j];
                    Assert.Equal(expected, o[(t * heads + h) * dv + j], 1e-5);
                }
            }
    }

    [Fact]
    public void WorkerExceptionsReachTheCaller()
    {
        using var pool = new WorkerPool(3);
        var e = Assert.Throws<InvalidOperationException>(() => pool.Run(new Failing(), 50));
        Assert.Equal("piece 17", e.Message);
        pool.Run(new Failing { FailAt = -1 }, 50); // the pool is still usable
    }

    private sealed class Failing : IParallelWork
    {
        public int FailAt { get; init; } = 17;
        public void Execute(int index, int worker)
        {
            if (index == FailAt) throw new InvalidOperationException($"piece {index}");
        }
    }
}
