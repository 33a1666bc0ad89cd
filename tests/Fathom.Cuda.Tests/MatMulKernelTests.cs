using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The GPU's weight × activation products equal the float64 dot of the CPU-dequantized weights with the activations,
/// within float rounding, for every type and for batches that fill a token tile, part of one, and several.
/// </summary>
public sealed class MatMulKernelTests(GpuFixture gpu)
{
    [Theory]
    [MemberData(nameof(TestData.AllTypes), MemberType = typeof(TestData))]
    public void ProductsMatchTheDequantizedDot(GgmlType type)
    {
        gpu.Require();
        WeightFormat format = TypeTraits.For(type);
        // Every split of a row over warps (1, 2, 4), with rows that fill the last block and rows that do not.
        // Single tokens also through matvec_T (vector), and a vector kernel over several tokens (one per block column).
        foreach ((int rows, int columns, int tokens, int split, bool vector) in new[]
                 {
                     (37, 512, 1, 1, false), (37, 512, 1, 4, true), (37, 512, 1, 1, true), (64, 768, 3, 2, false), (64, 768, 3, 2, true),
                     (21, 256, 8, 4, false), (50, 1024, 19, 2, false), (50, 1024, 19, 1, false),
                 })
        {
            var random = new Random(HashCode.Combine(type, rows, columns, tokens));
            byte[] weights = TestData.QuantizedRows(random, format, rows, columns);
            float[] x = TestData.Gaussian(random, tokens * columns);
            float[] y = Run(format.Type, weights, (int)format.Layout.RowBytes(columns), x, rows, columns, tokens, split, vector);
            var w = new float[rows * columns];
            format.Dequantize(weights, w);
            for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++)
            {
                double exact = 0, magnitude = 0;
                for (int k = 0; k < columns; k++)
                {
                    double p = (double)w[r * columns + k] * x[t * columns + k];
                    exact += p;
                    magnitude += Math.Abs(p);
                }
                float got = y[t * rows + r];
                Assert.False(float.IsNaN(got), $"{type} {rows}×{columns}, {tokens} tokens, split {split}{(vector ? ", matvec" : "")}: output [{t}, {r}] was not written");
                // Float sums of `columns` products: the error is bounded by a small multiple of eps × Σ|w·x|.
                Assert.True(Math.Abs(got - exact) <= 1e-5 * magnitude + 1e-30,
                    $"{type} {rows}×{columns}, {tokens} tokens, split {split}{(vector ? ", matvec" : "")}: [{t}, {r}] GPU {got}, exact {exact}, Σ|w·x| {magnitude}");
            }
        }
    }

    [Fact]
    public unsafe void TheBackendMultipliesRoundedActivationsLikeTheKernel()
    {
        CudaBackend backend = gpu.Backend;
        var random = new Random(7);
        WeightFormat format = TypeTraits.For(GgmlType.Q4_K);
        int rows = 48, columns = 512, tokens = 5;
        byte[] weights = GC.AllocateArray<byte>(rows * (int)format.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, format, rows, columns).CopyTo(weights, 0);
        fixed (byte* p = weights)
        {
            WeightMatrix matrix = WeightMatrix.InPlace("test.weight", GgmlType.Q4_K, p, rows, columns);
            for (int repeat = 0; repeat < 2; repeat++) // the second call uses the weights uploaded by the first
            {
                float[] x = TestData.Gaussian(random, tokens * columns);
                float[] y = Enumerable.Repeat(float.NaN, tokens * rows).ToArray();
                backend.MatMul(matrix, x, y, tokens);
                // The backend rounds activations to Q4_K's partner format, Q8_K, as the CPU engine does; the kernel
                // given activations rounded on the host must then produce exactly the backend's result.
                WeightFormat q8k = TypeTraits.For(format.DotActivationType);
                var encoded = new byte[q8k.Layout.RowBytes(x.Length)];
                q8k.Quantize(x, encoded, []);
                var rounded = new float[x.Length];
                q8k.Dequantize(encoded, rounded);
                float[] expected = Run(GgmlType.Q4_K, weights, (int)matrix.RowBytes, rounded, rows, columns, tokens);
                Assert.Equal(expected, y);
            }
        }
    }

    private float[] Run(GgmlType type, byte[] weights, int rowBytes, float[] x, int rows, int columns, int tokens, int split = 1, bool vector = false)
    {
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        using var w = new DeviceBuffer(context, weights.Length);
        using var input = new DeviceBuffer(context, (long)x.Length * sizeof(float));
        using var output = new DeviceBuffer(context, (long)rows * tokens * sizeof(float));
        w.Upload<byte>(weights);
        input.Upload<float>(x);
        output.Fill(0x7FC00000); // NaN: unwritten outputs fail the check
        gpu.Kernels.LaunchMatMul(context, type, "matmul", w.Pointer, rowBytes, input.Pointer, output.Pointer, rows, columns, tokens, split, vector);
        var y = new float[rows * tokens];
        output.Download<float>(y);
        return y;
    }
}
