using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats;
using static Fathom.Quants.Formats.Q4_KFormat;

namespace Fathom.Quants.Gemm;

/// <summary>
/// Q4_K × Q8_K for one weight row and four tokens at a time (AVX2). Per super-block the row's 6-bit scales and mins
/// are unpacked once and each 64-value chunk's nibbles split once, then multiplied with all four tokens' int8 values
/// (vpmaddubsw, vpmaddwd by the sub-block scale) into one int32 accumulator per token. The −dmin·Σ m·(Σx) offset
/// comes from the Q8_K group sums. The kernel Q4_K used before <see cref="Q4_KTransposedTile"/>, kept as the
/// reference that tests and the tile benchmark compare the newer one with (<see cref="TileKernels.ReplacedKernel"/>);
/// its float sums are in vector lanes, so its results equal the type's dot only up to rounding.
/// </summary>
internal sealed unsafe class Q4_KTile(WeightFormat format) : FourTokenTile(format)
{
    protected override void RowTimesFour(byte* w, byte* a0, long activationRowBytes, int n, float* y, long outputStride) =>
        FourTokens(w, a0, activationRowBytes, n / KQuantBlocks.SuperBlock, y, outputStride);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void FourTokens(byte* w, byte* a0, long activationRowBytes, int blocks, float* y, long outputStride)
    {
        byte* a1 = a0 + activationRowBytes, a2 = a1 + activationRowBytes, a3 = a2 + activationRowBytes;
        // The float accumulators live in memory, touched once per super-block, so that the chunk loop has the
        // registers for its int32 sums.
        Vector256<float>* acc = stackalloc Vector256<float>[4];
        Vector128<float>* minAcc = stackalloc Vector128<float>[4];
        for (int c = 0; c < 4; c++) { acc[c] = Vector256<float>.Zero; minAcc[c] = Vector128<float>.Zero; }
        Vector256<byte> lowNibble = Vector256.Create((byte)0x0F);
        for (int i = 0; i < blocks; i++, w += BlockBytes, a0 += Q8KLayout.BlockBytes, a1 += Q8KLayout.BlockBytes, a2 += Q8KLayout.BlockBytes, a3 += Q8KLayout.BlockBytes)
        {
            KQuantScales.UnpackScaleMins(w + ScalesOffset, out ulong scales, out ulong mins);
            Vector256<int> sumi0 = Vector256<int>.Zero, sumi1 = sumi0, sumi2 = sumi0, sumi3 = sumi0;
            Vector128<short> scales16 = Sse41.ConvertToVector128Int16(Vector128.CreateScalar(scales).AsByte());
            Vector256<byte> scalePairs = Vector256.Create(scales16, scales16).AsByte();
            for (int chunk = 0; chunk < 4; chunk++)
            {
                Vector256<byte> bits = Avx.LoadVector256(w + LevelsOffset + 32 * chunk);
                Vector256<byte> low = bits & lowNibble;
                Vector256<byte> high = Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & lowNibble;
                // vpshufb controls that spread int16 scale 2·chunk (and 2·chunk + 1) over every lane.
                Vector256<short> scaleLow = Avx2.Shuffle(scalePairs, Vector256.Create((short)(0x0100 + 0x0404 * chunk)).AsByte()).AsInt16();
                Vector256<short> scaleHigh = Avx2.Shuffle(scalePairs, Vector256.Create((short)(0x0302 + 0x0404 * chunk)).AsByte()).AsInt16();
                int offset = Q8KLayout.QuantsOffset + 64 * chunk;
                sumi0 += Scaled(low, high, scaleLow, scaleHigh, a0 + offset);
                sumi1 += Scaled(low, high, scaleLow, scaleHigh, a1 + offset);
                sumi2 += Scaled(low, high, scaleLow, scaleHigh, a2 + offset);
                sumi3 += Scaled(low, high, scaleLow, scaleHigh, a3 + offset);
            }
            Vector128<short> mins16 = Sse41.ConvertToVector128Int16(Vector128.CreateScalar(mins).AsByte());
            float d = Fp16.Table[*(ushort*)(w + DOffset)], dmin = Fp16.Table[*(ushort*)(w + DMinOffset)];
            acc[0] = Accumulate(acc[0], sumi0, d, a0); minAcc[0] = AccumulateMins(minAcc[0], mins16, dmin, a0);
            acc[1] = Accumulate(acc[1], sumi1, d, a1); minAcc[1] = AccumulateMins(minAcc[1], mins16, dmin, a1);
            acc[2] = Accumulate(acc[2], sumi2, d, a2); minAcc[2] = AccumulateMins(minAcc[2], mins16, dmin, a2);
            acc[3] = Accumulate(acc[3], sumi3, d, a3); minAcc[3] = AccumulateMins(minAcc[3], mins16, dmin, a3);
        }
        for (int c = 0; c < 4; c++)
            y[c * outputStride] = KQuantVector.HorizontalSum(acc[c]) + KQuantVector.HorizontalSum(minAcc[c]);
    }

    /// <summary>sc_low·(low·x[0..32)) + sc_high·(high·x[32..64)) as eight int32 partial sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Scaled(Vector256<byte> low, Vector256<byte> high, Vector256<short> scaleLow, Vector256<short> scaleHigh, byte* x) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(low, Avx.LoadVector256((sbyte*)x)), scaleLow)
      + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(high, Avx.LoadVector256((sbyte*)x + 32)), scaleHigh);

    /// <summary>acc + d·a·Σ sc·q·x for one token's super-block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Accumulate(Vector256<float> acc, Vector256<int> sumi, float d, byte* a) =>
        Fma.MultiplyAdd(Vector256.Create(d * *(float*)a), Avx.ConvertToVector256Single(sumi), acc);

    /// <summary>mins − dmin·a·Σ m_j·(Σx)_j, two sub-blocks per lane as the single-row kernel sums them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> AccumulateMins(Vector128<float> mins, Vector128<short> mins16, float dmin, byte* a)
    {
        Vector128<int> products = Sse2.MultiplyAddAdjacent(mins16, KQuantVector.Q8KPairSums(a));
        return Fma.MultiplyAddNegated(Vector128.Create(dmin * *(float*)a), Sse2.ConvertToVector128Single(products), mins);
    }
}
