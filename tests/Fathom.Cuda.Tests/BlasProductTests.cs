using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Prompt batches (at least <see cref="CudaBackend.BlasMinimumTokens"/> tokens) with the tensor cores off go through
/// single-precision cuBLAS on dequantized weights: the products equal the float64 dot of the CPU-dequantized weights with the activations as the CPU
/// rounds them (F32 weights: as they are), within float rounding, also when the matrix is multiplied in row chunks.
/// </summary>
public sealed unsafe class BlasProductTests(GpuFixture gpu)
{
    [Theory]
    [InlineData(GgmlType.F32, 0)]
    [InlineData(GgmlType.Q4_K, 0)]
    [InlineData(GgmlType.Q4_K, 7)]
    [InlineData(GgmlType.Q6_K, 0)]
    [InlineData(GgmlType.Q8_0, 16)]
    [InlineData(GgmlType.IQ1_S, 0)]
    [InlineData(GgmlType.IQ4_NL, 0)]
    public void PromptProductsMatchTheDequantizedDot(GgmlType type, int chunkRows)
    {
        CudaBackend backend = gpu.Backend;
        Assert.True(backend.Blas is not null, $"cuBLAS was not loaded: {backend.BlasProblem}");
        WeightFormat format = TypeTraits.For(type);
        int rows = 45, columns = 512, tokens = CudaBackend.BlasMinimumTokens + 9;
        var random = new Random(HashCode.Combine(type, chunkRows));
        byte[] weights = GC.AllocateArray<byte>(rows * (int)format.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, format, rows, columns).CopyTo(weights, 0);
        float[] x = TestData.Gaussian(random, tokens * columns);
        float[] y = Enumerable.Repeat(float.NaN, tokens * rows).ToArray();
        long limit = backend.DequantizedFloatsLimit;
        bool tensorCores = backend.TensorCoreProducts;
        try
        {
            backend.TensorCoreProducts = false; // the single-precision path; PromptProductTests covers the tensor cores
            if (chunkRows > 0) backend.DequantizedFloatsLimit = (long)chunkRows * columns;
            fixed (byte* p = weights)
                backend.MatMul(WeightMatrix.InPlace($"blas.{type}.{chunkRows}", type, p, rows, columns), x, y, tokens);
        }
        finally
        {
            backend.DequantizedFloatsLimit = limit;
            backend.TensorCoreProducts = tensorCores;
        }

        var w = new float[rows * columns];
        format.Dequantize(weights, w);
        float[] rounded = x;
        if (format.DotActivationType != GgmlType.F32)
        {
            WeightFormat activations = TypeTraits.For(format.DotActivationType);
            var encoded = new byte[activations.Layout.RowBytes(x.Length)];
            activations.Quantize(x, encoded, []);
            rounded = new float[x.Length];
            activations.Dequantize(encoded, rounded);
        }
        for (int t = 0; t < tokens; t++)
        for (int r = 0; r < rows; r++)
        {
            double exact = 0, magnitude = 0;
            for (int k = 0; k < columns; k++)
            {
                double product = (double)w[r * columns + k] * rounded[t * columns + k];
                exact += product;
                magnitude += Math.Abs(product);
            }
            float got = y[t * rows + r];
            Assert.True(Math.Abs(got - exact) <= 1e-5 * magnitude + 1e-30, $"{type}, chunks of {chunkRows}: [{t}, {r}] GPU {got}, exact {exact}, Σ|w·x| {magnitude}");
        }
    }
}
