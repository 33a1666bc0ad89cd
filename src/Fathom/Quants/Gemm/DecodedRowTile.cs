using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats;

namespace Fathom.Quants.Gemm;

/// <summary>
/// The type-specific half of <see cref="DecodedRowTile{TDecoder}"/>: turns one weight row of a 256-value super-block
/// type into integers, so that value = blockScale · groupScale · int8 exactly as the type's dot product computes it.
/// </summary>
internal unsafe interface IRowDecoder
{
    /// <summary>
    /// Decodes <paramref name="superBlocks"/> super-blocks: 256 int8 values each into <paramref name="values"/>, one
    /// int16 scale per 32 values into <paramref name="groupScales"/>, one float per super-block into <paramref name="blockScales"/>.
    /// </summary>
    static abstract void Decode(byte* row, int superBlocks, sbyte* values, short* groupScales, float* blockScales);
}

/// <summary>
/// A tile kernel for types whose blocks are expensive to unpack (grid look-ups of the IQ types) against Q8_K
/// activations: each weight row is decoded to int8 once per tile, into a stack buffer, and then multiplied with every
/// token of the tile, four at a time — so the decoding is paid once per row and token block instead of once per
/// (row, token) as in the single-row kernels.
/// </summary>
internal sealed unsafe class DecodedRowTile<TDecoder>(WeightFormat format) : TileKernel(format) where TDecoder : IRowDecoder
{
    // Rows longer than this (256 KB of int8 would not fit the stack comfortably) go one Dot at a time.
    private const int MaxDecodedColumns = 32768;

    public override int TokenTile => 4;

    public override void Multiply(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes,
        int tokens, int n, float* output, long outputStride)
    {
        if (n > MaxDecodedColumns || tokens < 4)
        {
            for (int r = 0; r < rows; r++)
                for (int t = 0; t < tokens; t++)
                    output[t * outputStride + r] = DotOne(weights + r * weightRowBytes, weightRowBytes, activations + t * activationRowBytes, activationRowBytes, n);
            return;
        }
        int superBlocks = n / Q8KLayout.BlockSize;
        sbyte* values = stackalloc sbyte[n];
        short* groupScales = stackalloc short[n / 32];
        float* blockScales = stackalloc float[superBlocks];
        for (int r = 0; r < rows; r++)
        {
            byte* row = weights + r * weightRowBytes;
            TDecoder.Decode(row, superBlocks, values, groupScales, blockScales);
            int t = 0;
            for (; t + 4 <= tokens; t += 4)
                RowTimesFour(values, groupScales, blockScales, superBlocks, activations + t * activationRowBytes, activationRowBytes, output + t * outputStride + r, outputStride);
            for (; t < tokens; t++)
                output[t * outputStride + r] = DotOne(row, weightRowBytes, activations + t * activationRowBytes, activationRowBytes, n);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void RowTimesFour(sbyte* values, short* groupScales, float* blockScales, int superBlocks, byte* a0, long activationRowBytes, float* y, long outputStride)
    {
        byte* a1 = a0 + activationRowBytes, a2 = a1 + activationRowBytes, a3 = a2 + activationRowBytes;
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
        for (int i = 0; i < superBlocks; i++, a0 += Q8KLayout.BlockBytes, a1 += Q8KLayout.BlockBytes, a2 += Q8KLayout.BlockBytes, a3 += Q8KLayout.BlockBytes)
        {
            Vector256<int> sumi0 = Vector256<int>.Zero, sumi1 = sumi0, sumi2 = sumi0, sumi3 = sumi0;
            for (int g = 0; g < 8; g++)
            {
                Vector256<sbyte> w = Avx.LoadVector256(values + 256 * i + 32 * g);
                Vector256<byte> magnitude = Avx2.Abs(w);
                Vector256<short> scale = Vector256.Create(groupScales[8 * i + g]);
                int offset = Q8KLayout.QuantsOffset + 32 * g;
                sumi0 += Scaled(magnitude, w, scale, a0 + offset);
                sumi1 += Scaled(magnitude, w, scale, a1 + offset);
                sumi2 += Scaled(magnitude, w, scale, a2 + offset);
                sumi3 += Scaled(magnitude, w, scale, a3 + offset);
            }
            float d = blockScales[i];
            acc0 = Fma.MultiplyAdd(Vector256.Create(d * *(float*)a0), Avx.ConvertToVector256Single(sumi0), acc0);
            acc1 = Fma.MultiplyAdd(Vector256.Create(d * *(float*)a1), Avx.ConvertToVector256Single(sumi1), acc1);
            acc2 = Fma.MultiplyAdd(Vector256.Create(d * *(float*)a2), Avx.ConvertToVector256Single(sumi2), acc2);
            acc3 = Fma.MultiplyAdd(Vector256.Create(d * *(float*)a3), Avx.ConvertToVector256Single(sumi3), acc3);
        }
        y[0] = KQuantVector.HorizontalSum(acc0);
        y[outputStride] = KQuantVector.HorizontalSum(acc1);
        y[2 * outputStride] = KQuantVector.HorizontalSum(acc2);
        y[3 * outputStride] = KQuantVector.HorizontalSum(acc3);
    }

    /// <summary>scale · Σ w·x over 32 values (|w| times x carrying w's sign), as eight int32 partial sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Scaled(Vector256<byte> magnitude, Vector256<sbyte> w, Vector256<short> scale, byte* x) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(magnitude, Avx2.Sign(Avx.LoadVector256((sbyte*)x), w)), scale);
}
