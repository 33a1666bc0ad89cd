using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats;
using static Fathom.Quants.Formats.Q6_KFormat;

namespace Fathom.Quants.Gemm;

/// <summary>
/// Q6_K × Q8_K for one weight row and four tokens at a time (AVX2). Each 32-value slice's 6-bit levels are
/// assembled once (low nibble from ql, two high bits from qh) and multiplied unsigned with the four tokens' int8
/// values, scaled per 16-value group; the −32 bias is taken off once per super-block as 32·Σ sc_g·(Σx)_g from the
/// Q8_K group sums, as in the single-row kernel. The four slices of each half are written out so that every shift
/// and shuffle mask is a constant. The kernel Q6_K used before <see cref="Q6_KTransposedTile"/>, kept as the reference
/// that tests and the tile benchmark compare the newer one with (<see cref="TileKernels.ReplacedKernel"/>); its
/// float sums are in vector lanes, so its results equal the type's dot only up to rounding.
/// </summary>
internal sealed unsafe class Q6_KTile(WeightFormat format) : FourTokenTile(format)
{
    protected override void RowTimesFour(byte* w, byte* a0, long activationRowBytes, int n, float* y, long outputStride) =>
        FourTokens(w, a0, activationRowBytes, n / KQuantBlocks.SuperBlock, y, outputStride);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void FourTokens(byte* w, byte* a0, long activationRowBytes, int blocks, float* y, long outputStride)
    {
        byte* a1 = a0 + activationRowBytes, a2 = a1 + activationRowBytes, a3 = a2 + activationRowBytes;
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
        Vector256<byte> low4 = Vector256.Create((byte)0x0F), low2 = Vector256.Create((byte)0x03);
        for (int i = 0; i < blocks; i++, w += BlockBytes, a0 += Q8KLayout.BlockBytes, a1 += Q8KLayout.BlockBytes, a2 += Q8KLayout.BlockBytes, a3 += Q8KLayout.BlockBytes)
        {
            sbyte* scales = (sbyte*)(w + ScalesOffset);
            Vector256<short> allScales = Avx2.ConvertToVector256Int16(scales);
            Vector256<int> sumi0 = Vector256<int>.Zero, sumi1 = sumi0, sumi2 = sumi0, sumi3 = sumi0;
            for (int half = 0; half < 2; half++)
            {
                // Values 128h + 32k … +31 are the low (k < 2) or high (k ≥ 2) nibbles of ql[64h + 32(k&1) …] with
                // bits 2k, 2k+1 of qh[32h …] on top, in groups 8h+2k and 8h+2k+1.
                Vector256<byte> ql0 = Avx.LoadVector256(w + LowOffset + 64 * half);
                Vector256<byte> ql1 = Avx.LoadVector256(w + LowOffset + 64 * half + 32);
                Vector256<byte> qh = Avx.LoadVector256(w + HighOffset + 32 * half);
                Vector256<short> halfScales = half == 0 ? Avx2.Permute2x128(allScales, allScales, 0x00) : Avx2.Permute2x128(allScales, allScales, 0x11);
                int offset = Q8KLayout.QuantsOffset + 128 * half;

                Vector256<byte> q = (ql0 & low4) | Avx2.ShiftLeftLogical((qh & low2).AsUInt16(), 4).AsByte();
                Vector256<short> groupScales = KQuantVector.PickGroupScales(halfScales, 0);
                sumi0 += Scaled(q, groupScales, a0 + offset);
                sumi1 += Scaled(q, groupScales, a1 + offset);
                sumi2 += Scaled(q, groupScales, a2 + offset);
                sumi3 += Scaled(q, groupScales, a3 + offset);

                q = (ql1 & low4) | Avx2.ShiftLeftLogical((qh & Vector256.Create((byte)0x0C)).AsUInt16(), 2).AsByte();
                groupScales = KQuantVector.PickGroupScales(halfScales, 1);
                sumi0 += Scaled(q, groupScales, a0 + offset + 32);
                sumi1 += Scaled(q, groupScales, a1 + offset + 32);
                sumi2 += Scaled(q, groupScales, a2 + offset + 32);
                sumi3 += Scaled(q, groupScales, a3 + offset + 32);

                q = (Avx2.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte() & low4) | (qh & Vector256.Create((byte)0x30));
                groupScales = KQuantVector.PickGroupScales(halfScales, 2);
                sumi0 += Scaled(q, groupScales, a0 + offset + 64);
                sumi1 += Scaled(q, groupScales, a1 + offset + 64);
                sumi2 += Scaled(q, groupScales, a2 + offset + 64);
                sumi3 += Scaled(q, groupScales, a3 + offset + 64);

                q = (Avx2.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte() & low4) | Avx2.ShiftRightLogical((qh & Vector256.Create((byte)0xC0)).AsUInt16(), 2).AsByte();
                groupScales = KQuantVector.PickGroupScales(halfScales, 3);
                sumi0 += Scaled(q, groupScales, a0 + offset + 96);
                sumi1 += Scaled(q, groupScales, a1 + offset + 96);
                sumi2 += Scaled(q, groupScales, a2 + offset + 96);
                sumi3 += Scaled(q, groupScales, a3 + offset + 96);
            }
            float d = Fp16.Table[*(ushort*)(w + DOffset)];
            acc0 = Accumulate(acc0, sumi0, allScales, d, a0);
            acc1 = Accumulate(acc1, sumi1, allScales, d, a1);
            acc2 = Accumulate(acc2, sumi2, allScales, d, a2);
            acc3 = Accumulate(acc3, sumi3, allScales, d, a3);
        }
        y[0] = KQuantVector.HorizontalSum(acc0);
        y[outputStride] = KQuantVector.HorizontalSum(acc1);
        y[2 * outputStride] = KQuantVector.HorizontalSum(acc2);
        y[3 * outputStride] = KQuantVector.HorizontalSum(acc3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Scaled(Vector256<byte> q, Vector256<short> groupScales, byte* x) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256((sbyte*)x)), groupScales);

    /// <summary>acc + d·a·(Σ sc·q·x − 32·Σ sc_g·(Σx)_g) for one token's super-block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Accumulate(Vector256<float> acc, Vector256<int> sumi, Vector256<short> allScales, float d, byte* a)
    {
        Vector256<int> bias = Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(allScales, KQuantVector.Q8KGroupSums(a)), 5);
        return Fma.MultiplyAdd(Vector256.Create(d * *(float*)a), Avx.ConvertToVector256Single(sumi - bias), acc);
    }
}
