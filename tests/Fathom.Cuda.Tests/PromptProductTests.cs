using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Prompt batches on the tensor cores (<see cref="CudaBackend.TensorCoreProducts"/>) against the float64 dot of the
/// operands as the CPU multiplies them (its dequantized weights, its rounded activations): F16 and BF16 weights are
/// exact operands, so the products agree within FP32 summation; quantized weights split into two F16 halves (the
/// default, <see cref="CudaBackend.SplitHalfProducts"/>) agree as closely; unsplit, each product equals the float64 dot
/// of the F16-rounded operands, and loses one F16 step against the CPU's. Also in row chunks.
/// </summary>
public sealed unsafe class PromptProductTests(GpuFixture gpu)
{
    [Theory]
    [InlineData(GgmlType.F16, 0, true)]
    [InlineData(GgmlType.BF16, 0, true)]
    [InlineData(GgmlType.Q4_K, 0, true)]
    [InlineData(GgmlType.Q4_K, 7, true)]
    [InlineData(GgmlType.Q6_K, 0, true)]
    [InlineData(GgmlType.Q8_0, 16, true)]
    [InlineData(GgmlType.Q5_0, 0, true)]
    [InlineData(GgmlType.IQ1_S, 0, true)]
    [InlineData(GgmlType.IQ4_XS, 0, true)]
    [InlineData(GgmlType.Q4_K, 0, false)]
    [InlineData(GgmlType.Q6_K, 5, false)]
    [InlineData(GgmlType.IQ2_XXS, 0, false)]
    public void TensorCoreProductsMatchTheDotOfTheirOperands(GgmlType type, int chunkRows, bool split)
    {
        CudaBackend backend = gpu.Backend;
        Assert.True(backend.Blas is not null, $"cuBLAS was not loaded: {backend.BlasProblem}");
        WeightFormat format = TypeTraits.For(type);
        // Shapes differ per case: uploaded weights are known by address and shape, and a test's array may reuse an address.
        int rows = 72 + 8 * chunkRows + (split ? 0 : 4), columns = 512, tokens = CudaBackend.BlasMinimumTokens + 13;
        var random = new Random(HashCode.Combine(type, chunkRows, split));
        byte[] weights = GC.AllocateArray<byte>(rows * (int)format.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, format, rows, columns).CopyTo(weights, 0);
        float[] x = TestData.Gaussian(random, tokens * columns, 3f);

        var w = new float[rows * columns];
        format.Dequantize(weights, w);
        float[] activations = RoundedAsTheCpu(format, x);
        bool dense = type is GgmlType.F16 or GgmlType.BF16, bf16 = type == GgmlType.BF16;
        // The operands the unsplit product multiplies; for dense weights and split products, the CPU's own.
        bool halfOperands = !dense && !split;
        float[] opW = halfOperands ? w.Select(v => (float)(Half)v).ToArray() : w;
        float[] opX = halfOperands ? activations.Select(v => (float)(Half)v).ToArray() : activations;
        if (dense) Assert.Equal(activations, activations.Select(v => ToOperand(v, bf16)).ToArray()); // already in the weight's format

        long limit = backend.DequantizedFloatsLimit;
        bool wasSplit = backend.SplitHalfProducts, wasCodes = backend.CodeProducts;
        float[] y = Enumerable.Repeat(float.NaN, tokens * rows).ToArray();
        try
        {
            backend.CodeProducts = false; // the F16 path itself (CodeProductTests has the integer one)
            backend.SplitHalfProducts = split;
            if (chunkRows > 0) backend.DequantizedFloatsLimit = (long)chunkRows * columns;
            fixed (byte* p = weights)
                backend.MatMul(WeightMatrix.InPlace($"tensor-cores.{type}.{chunkRows}.{split}", type, p, rows, columns), x, y, tokens);
        }
        finally
        {
            backend.DequantizedFloatsLimit = limit;
            backend.SplitHalfProducts = wasSplit;
            backend.CodeProducts = wasCodes;
        }

        double lossNumerator = 0, lossDenominator = 0;
        for (int t = 0; t < tokens; t++)
        for (int r = 0; r < rows; r++)
        {
            double dot = 0, magnitude = 0, exact = 0;
            for (int k = 0; k < columns; k++)
            {
                double product = (double)opW[r * columns + k] * opX[t * columns + k];
                dot += product;
                magnitude += Math.Abs(product);
                exact += (double)w[r * columns + k] * activations[t * columns + k];
            }
            float got = y[t * rows + r];
            Assert.True(Math.Abs(got - dot) <= 1e-5 * magnitude, $"{type}, chunks of {chunkRows}, split {split}: [{t}, {r}] GPU {got}, operand dot {dot}, Σ|w·x| {magnitude}");
            lossNumerator += (got - exact) * (got - exact);
            lossDenominator += exact * exact;
        }
        // Against the CPU's operands, unsplit F16 loses about one F16 step; the others nothing beyond FP32 sums.
        double loss = Math.Sqrt(lossNumerator / lossDenominator);
        Assert.True(loss <= (halfOperands ? 2e-3 : 1e-5), $"{type}, split {split}: relative L2 {loss:E2} against the product of the CPU's operands");
    }

    [Fact]
    public void ProductsSharingAnInputReuseItsHalvesOnlyWhileItIsUnchanged()
    {
        CudaBackend backend = gpu.Backend;
        WeightFormat format = TypeTraits.For(GgmlType.Q4_K);
        int rows = 256, columns = 256, tokens = CudaBackend.BlasMinimumTokens;
        var random = new Random(61);
        byte[] weights = GC.AllocateArray<byte>(2 * rows * (int)format.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, format, 2 * rows, columns).CopyTo(weights, 0);
        // One attached buffer holding the input and two outputs.
        float[] buffer = GC.AllocateArray<float>(3 * tokens * columns, pinned: true);
        TestData.Gaussian(random, tokens * columns).CopyTo(buffer, 0);
        float[] input = buffer[..(tokens * columns)];
        float[] first = new float[tokens * rows], second = new float[tokens * rows], replaced = new float[tokens * rows], fourth = new float[tokens * rows];
        using var cpu = new Cpu.CpuBackend(2);
        fixed (byte* p = weights)
        {
            var a = WeightMatrix.InPlace("reuse.a", GgmlType.Q4_K, p, rows, columns);
            var b = WeightMatrix.InPlace("reuse.b", GgmlType.Q4_K, p + rows * format.Layout.RowBytes(columns), rows, columns);
            cpu.MatMul(a, input, first, tokens);
            cpu.MatMul(b, input, second, tokens);
            cpu.MatMul(a, input, replaced, tokens);
            cpu.MatMul(b, replaced, fourth, tokens);

            backend.Attach(buffer);
            bool wasCodes = backend.CodeProducts;
            backend.CodeProducts = false; // the halves' reuse (CodeProductTests has the codes')
            try
            {
            Span<float> x = buffer.AsSpan(0, tokens * columns), y1 = buffer.AsSpan(tokens * columns, tokens * rows), y2 = buffer.AsSpan(2 * tokens * columns, tokens * rows);
            backend.MatMul(a, x, y1, tokens);
            backend.MatMul(b, x, y2, tokens);   // the same input: its halves are reused
            backend.ReadToHost(buffer);
            Assert.True(TestData.RelativeL2(y1, first) < 1e-5, $"first: {TestData.RelativeL2(y1, first):E2}");
            Assert.True(TestData.RelativeL2(y2, second) < 1e-5, $"second: {TestData.RelativeL2(y2, second):E2}");
            backend.MatMul(a, x, x, tokens);    // written over its own input (the product reads the halves, not x)
            backend.MatMul(b, x, y2, tokens);   // the same address, new values: converted anew
            backend.ReadToHost(buffer);
            Assert.True(TestData.RelativeL2(x, replaced) < 1e-5, $"in place: {TestData.RelativeL2(x, replaced):E2}");
            Assert.True(TestData.RelativeL2(y2, fourth) < 4e-3, $"after the overwrite: {TestData.RelativeL2(y2, fourth):E2}");
            }
            finally
            {
                backend.CodeProducts = wasCodes;
            }
        }
    }

    /// <summary>The activations as the CPU multiplies them: encoded in the weight's partner format and decoded.</summary>
    private static float[] RoundedAsTheCpu(WeightFormat format, float[] x)
    {
        if (format.DotActivationType == GgmlType.F32) return x;
        WeightFormat activations = TypeTraits.For(format.DotActivationType);
        var encoded = new byte[activations.Layout.RowBytes(x.Length)];
        activations.Quantize(x, encoded, []);
        var rounded = new float[x.Length];
        activations.Dequantize(encoded, rounded);
        return rounded;
    }

    private static float ToOperand(float v, bool bf16) => bf16 ? Bf16.ToSingle(Bf16.FromSingle(v)) : (float)(Half)v;
}
