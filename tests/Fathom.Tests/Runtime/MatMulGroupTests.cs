using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Tests.Runtime;

/// <summary>
/// <see cref="IComputeBackend.MatMulGroup"/> against the plain loop it replaces: one one-token
/// <see cref="IComputeBackend.MatMul"/> per matrix. The CPU backend runs the same row kernels on the same activation
/// bytes, so the results must be identical, not merely close.
/// </summary>
public sealed class MatMulGroupTests
{
    private sealed record Group(WeightMatrix[] Weights, byte[][] Keep);

    private static Group Build(int seed, params (GgmlType Type, int Rows, int Columns)[] shapes)
    {
        var weights = new WeightMatrix[shapes.Length];
        var keep = new byte[shapes.Length][];
        for (int i = 0; i < shapes.Length; i++)
        {
            (GgmlType type, int rows, int columns) = shapes[i];
            (weights[i], keep[i]) = CpuBackendTests.Quantized(type, CpuBackendTests.Random(rows * columns, seed + i), rows, columns);
        }
        return new Group(weights, keep);
    }

    private static float[] OneMatMulPerMatrix(IComputeBackend backend, WeightMatrix[] weights, float[] inputs, int inputStride, int outputLength, int outputStride)
    {
        float[] outputs = new float[outputLength];
        for (int i = 0; i < weights.Length; i++)
            backend.MatMul(weights[i], inputs.AsSpan(i * inputStride, weights[i].Columns), outputs.AsSpan(i * outputStride, weights[i].Rows), 1);
        return outputs;
    }

    /// <summary>
    /// Experts' gates and ups, or a router beside the shared experts: one input for all. Mixed activation formats
    /// (Q8_K for the K- and IQ types, Q8_0, F32), two matrices sharing one format (so one conversion serves both),
    /// output rows laid out at a stride wider than some matrices.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void SharedInputGroupEqualsOneMatMulPerMatrix(int threads)
    {
        Group g = Build(10,
            (GgmlType.Q4_K, 37, 512), (GgmlType.IQ1_S, 41, 512), (GgmlType.F32, 16, 512), (GgmlType.Q8_0, 23, 512),
            (GgmlType.Q6_K, 50, 512), (GgmlType.IQ1_S, 29, 512), (GgmlType.Q4_K, 3, 512));
        const int stride = 50;
        float[] x = CpuBackendTests.Random(512, 1, 3f);
        int outputLength = (g.Weights.Length - 1) * stride + g.Weights[^1].Rows;
        using var backend = new CpuBackend(threads);
        float[] expected = OneMatMulPerMatrix(backend, g.Weights, x, 0, outputLength, stride);
        float[] actual = new float[outputLength];
        backend.MatMulGroup(g.Weights, x, 0, actual, stride);
        Assert.Equal(expected, actual);
        GC.KeepAlive(g);
    }

    /// <summary>MLA's per-head products and the experts' downs: every matrix its own input, read at a stride.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void StridedInputGroupEqualsOneMatMulPerMatrix(int threads)
    {
        Group g = Build(20,
            (GgmlType.F32, 24, 256), (GgmlType.Q8_0, 40, 256), (GgmlType.Q4_K, 7, 256), (GgmlType.IQ2_XXS, 33, 256),
            (GgmlType.Q5_0, 40, 256), (GgmlType.IQ4_NL, 1, 256), (GgmlType.Q6_K, 40, 256), (GgmlType.F32, 19, 256));
        const int inputStride = 300, outputStride = 40;
        float[] x = CpuBackendTests.Random(g.Weights.Length * inputStride, 2, 3f);
        int outputLength = (g.Weights.Length - 1) * outputStride + g.Weights[^1].Rows;
        using var backend = new CpuBackend(threads);
        float[] expected = OneMatMulPerMatrix(backend, g.Weights, x, inputStride, outputLength, outputStride);
        float[] actual = new float[outputLength];
        backend.MatMulGroup(g.Weights, x, inputStride, actual, outputStride);
        Assert.Equal(expected, actual);
        GC.KeepAlive(g);
    }

    /// <summary>Output slots between the matrices' rows are left as they were.</summary>
    [Fact]
    public void GroupWritesOnlyEachMatrixsRows()
    {
        Group g = Build(30, (GgmlType.Q8_0, 5, 64), (GgmlType.Q8_0, 3, 64));
        float[] outputs = Enumerable.Repeat(42f, 16).ToArray();
        using var backend = new CpuBackend(2);
        backend.MatMulGroup(g.Weights, CpuBackendTests.Random(64, 3), 0, outputs, 8);
        Assert.All(outputs.AsSpan(5, 3).ToArray(), v => Assert.Equal(42f, v));
        Assert.All(outputs.AsSpan(11, 5).ToArray(), v => Assert.Equal(42f, v));
        Assert.DoesNotContain(42f, outputs.AsSpan(0, 5).ToArray());
        GC.KeepAlive(g);
    }

    /// <summary>Backends that do not override the group (CUDA's, the tests' reference backends) get the MatMul loop.</summary>
    [Fact]
    public void DefaultImplementationIsTheMatMulLoop()
    {
        Group g = Build(40, (GgmlType.Q4_K, 9, 256), (GgmlType.F32, 12, 256), (GgmlType.IQ1_S, 10, 256));
        const int inputStride = 256, outputStride = 12;
        float[] x = CpuBackendTests.Random(3 * inputStride, 4, 2f);
        using var cpu = new CpuBackend(2);
        using var loopOnly = new MatMulOnlyBackend(new CpuBackend(2));
        float[] grouped = new float[3 * outputStride], looped = new float[3 * outputStride];
        cpu.MatMulGroup(g.Weights, x, inputStride, grouped, outputStride);
        ((IComputeBackend)loopOnly).MatMulGroup(g.Weights, x, inputStride, looped, outputStride);
        Assert.Equal(g.Weights.Length, loopOnly.MatMulCalls);
        Assert.Equal(grouped, looped);
        GC.KeepAlive(g);
    }

    [Fact]
    public void MisshapenGroupsAreRejected()
    {
        Group g = Build(50, (GgmlType.Q8_0, 5, 64), (GgmlType.Q8_0, 3, 64));
        using var backend = new CpuBackend(2);
        float[] x = new float[128], y = new float[16];
        Assert.Contains("overlap", Assert.Throws<ArgumentException>(() => backend.MatMulGroup(g.Weights, x, 0, y, 4)).Message);
        Assert.Contains("outputs hold", Assert.Throws<ArgumentException>(() => backend.MatMulGroup(g.Weights, x, 0, y.AsSpan(0, 10), 8)).Message);
        Assert.Contains("inputs hold", Assert.Throws<ArgumentException>(() => backend.MatMulGroup(g.Weights, x.AsSpan(0, 100), 64, y, 8)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.MatMulGroup(g.Weights, x, -1, y, 8));
        backend.MatMulGroup([], x, 0, y, 8); // nothing to do
        GC.KeepAlive(g);
    }

    /// <summary>
    /// Transposed products (MLA's key rows of a fused attn_kv_b): every (token, matrix) equals
    /// <see cref="WeightMatrix.MultiplyTransposed"/> exactly, whether the token came alone or in a batch of 37 (a token
    /// block of 32 and one of 5: a group of four and one token alone), on 1–3 threads and through the default implementation; and MultiplyTransposed
    /// equals a double-precision sum over the dequantized rows.
    /// </summary>
    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 1)]
    [InlineData(2, 37)]
    [InlineData(3, 37)]
    public void TransposedGroupEqualsMultiplyTransposedPerTokenAndMatrix(int threads, int tokens)
    {
        // 40 and 96 columns: the batched kernel's sixteen-column steps end in a tail of 8 and 0 columns.
        Group g = Build(60, (GgmlType.Q4_K, 12, 256), (GgmlType.Q6_K, 12, 256), (GgmlType.Q8_0, 12, 256), (GgmlType.F32, 12, 256), (GgmlType.IQ4_NL, 9, 256),
            (GgmlType.F32, 7, 40), (GgmlType.Q8_0, 5, 96));
        const int inputStride = 16, outputStride = 260;
        int inputTokenStride = g.Weights.Length * inputStride + 3, outputTokenStride = g.Weights.Length * outputStride;
        float[] x = CpuBackendTests.Random(tokens * inputTokenStride, 5, 2f);
        using var backend = new CpuBackend(threads);
        float[] actual = new float[tokens * outputTokenStride];
        backend.TransposedMatMulGroup(g.Weights, x, inputStride, actual, outputStride, tokens, inputTokenStride, outputTokenStride);

        float[] viaDefault = new float[actual.Length];
        using var loopOnly = new MatMulOnlyBackend(new CpuBackend(1));
        ((IComputeBackend)loopOnly).TransposedMatMulGroup(g.Weights, x, inputStride, viaDefault, outputStride, tokens, inputTokenStride, outputTokenStride);
        Assert.Equal(viaDefault, actual);

        float[] row = new float[256], expected = new float[256];
        for (int t = 0; t < tokens; t++)
            for (int i = 0; i < g.Weights.Length; i++)
            {
                WeightMatrix w = g.Weights[i];
                ReadOnlySpan<float> input = x.AsSpan(t * inputTokenStride + i * inputStride, w.Rows);
                w.MultiplyTransposed(input, expected, row);
                Assert.Equal(expected.AsSpan(0, w.Columns).ToArray(), actual.AsSpan(t * outputTokenStride + i * outputStride, w.Columns).ToArray());
                for (int c = 0; c < w.Columns; c++)
                {
                    double sum = 0, magnitude = 0;
                    for (int r = 0; r < w.Rows; r++)
                    {
                        w.DequantizeRow(r, row);
                        sum += (double)input[r] * row[c];
                        magnitude += Math.Abs((double)input[r] * row[c]);
                    }
                    Assert.True(Math.Abs(expected[c] - sum) <= 1e-6 * magnitude + 1e-7, $"{w.Format} token {t} column {c}: {expected[c]} vs {sum}");
                }
            }
        GC.KeepAlive(g);
    }

    /// <summary>Implements only the required members; MatMul goes to a CPU backend and is counted.</summary>
    private sealed class MatMulOnlyBackend(CpuBackend inner) : IComputeBackend
    {
        public int MatMulCalls { get; private set; }
        public int Threads => inner.Threads;

        public void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens)
        {
            MatMulCalls++;
            inner.MatMul(weight, input, output, tokens);
        }

        public void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon) => throw new NotSupportedException();
        public void Rope(Fathom.Runtime.Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition) => throw new NotSupportedException();
        public void SiluMul(Span<float> gate, ReadOnlySpan<float> up) => throw new NotSupportedException();
        public void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens) => throw new NotSupportedException();
        public void Dispose() => inner.Dispose();
    }
}
