using Fathom.Quants;
using Fathom.Tests.Reference;

namespace Fathom.Tests.Models;

/// <summary>
/// The two summation orders of the F16 and BF16 dots (<see cref="DotOrder"/>) on their own: the vec_dot order equals
/// ggml's own <c>ggml_vec_dot_f16</c> / <c>ggml_vec_dot_bf16</c> bit for bit (AVX2 build; rows with and without a rest
/// past the last step of 32), the portable path of each order equals its AVX2 path bit for bit, and
/// <see cref="WeightFormat.DotRows"/> (four rows at a time) equals one <see cref="WeightFormat.Dot(ReadOnlySpan{byte}, ReadOnlySpan{byte}, int)"/>
/// per row. (The tinyBLAS order is checked against ggml through its graph: <see cref="HalfPrecisionProductTests"/>.)
/// </summary>
public sealed unsafe class HalfPrecisionDotOrderTests
{
    public static TheoryData<GgmlType, int> Cases => new()
    {
        { GgmlType.F16, 32 }, { GgmlType.F16, 96 }, { GgmlType.F16, 100 }, { GgmlType.F16, 4096 }, { GgmlType.F16, 13 },
        { GgmlType.BF16, 32 }, { GgmlType.BF16, 96 }, { GgmlType.BF16, 100 }, { GgmlType.BF16, 4096 }, { GgmlType.BF16, 13 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void OrdersAreGgmlsOnEveryPath(GgmlType type, int n)
    {
        const int rows = 11;
        WeightFormat gemm = TypeTraits.For(type), vecDot = gemm.WithDotOrder(DotOrder.GgmlVecDot);
        Assert.Same(gemm, gemm.WithDotOrder(DotOrder.LlamafileGemm));
        Assert.Same(gemm, vecDot.WithDotOrder(DotOrder.LlamafileGemm));
        int rowBytes = (int)gemm.Layout.RowBytes(n);
        var rng = new Random(n);
        float[] values = [.. Enumerable.Range(0, (rows + 1) * n).Select(_ => (float)(rng.NextDouble() * 4 - 2))];
        var weights = new byte[rows * rowBytes];
        var activations = new byte[rowBytes];
        for (int r = 0; r < rows; r++) gemm.Quantize(values.AsSpan(r * n, n), weights.AsSpan(r * rowBytes, rowBytes), []);
        gemm.Quantize(values.AsSpan(rows * n, n), activations, []);

        var ggmlDot = GgmlQuants.VecDotPointer(type);
        var gemmRows = new float[rows];
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        fixed (float* y = gemmRows)
        {
            gemm.DotRows(w, rowBytes, rows, a, rowBytes, n, y);
            for (int r = 0; r < rows; r++)
            {
                ReadOnlySpan<byte> row = weights.AsSpan(r * rowBytes, rowBytes);
                float ggml;
                ggmlDot(n, &ggml, 0, w + r * rowBytes, 0, a, 0, 1);
                if (GgmlLibrary.IsAvx2Build) Assert.Equal(Bits(ggml), Bits(vecDot.Dot(row, activations, n, KernelPath.Avx2)));
                foreach (WeightFormat format in new[] { gemm, vecDot })
                    Assert.Equal(Bits(format.Dot(row, activations, n, KernelPath.Avx2)), Bits(format.Dot(row, activations, n, KernelPath.Portable)));
                Assert.Equal(Bits(gemm.Dot(row, activations, n)), Bits(gemmRows[r]));
            }
        }
    }

    private static int Bits(float value) => BitConverter.SingleToInt32Bits(value);
}
