using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats;
using static Fathom.Quants.Formats.Q4_KFormat;

namespace Fathom.Quants.Gemm;

/// <summary>
/// Q4_K × Q8_K for a block of rows × a block of tokens (AVX2), with both sides' super-blocks transposed so that one
/// vpmaddwd per super-block and token applies all eight sub-block scales.
/// <para>
/// A super-block's 256 values are eight 32-value sub-blocks, each with its own 6-bit scale. The straightforward
/// kernel (<see cref="Q4_KTile"/>) multiplies 32 values of one sub-block per vpmaddubsw and scales each product
/// with its own vpmaddwd: two multiplies per 32 values and token, and this CPU class (Zen 3) issues one vector integer
/// multiply per cycle. Here each super-block, seen as 8 sub-blocks × eight 4-byte words, is transposed (an 8×8
/// transpose of 32-bit words), so that vector k holds word k of every sub-block and int16 lanes 2j, 2j+1 of each
/// vpmaddubsw result belong to sub-block j. The eight vpmaddubsw results of a super-block then add up in int16
/// (|sum| ≤ 8·2·15·128 = 30720, no overflow) and a single vpmaddwd by (sc_j, sc_j) per lane pair scales them all:
/// nine multiplies per 256 values instead of sixteen. The mins term Σ m_j·(Σx)_j is taken in float (exactly: small
/// integers), which leaves the integer multiplier to the levels.
/// </para>
/// <para>
/// The passes are <see cref="TransposedTile"/>'s: weight rows decoded once per tile (nibbles split, transposed,
/// scales and mins widened to int16, d and dmin as floats), tokens transposed once per tile, then one row × four
/// tokens at a time. The integer sums per super-block equal the single-row kernel's, and the float step is
/// <see cref="Q4_KDot.AddSuperBlock"/>, so results are bit-identical to <see cref="Q4_KFormat"/>'s dot (scalar or
/// vector) for every (row, token).
/// </para>
/// </summary>
internal sealed unsafe class Q4_KTransposedTile(WeightFormat format) : TransposedTile(format)
{
    // A decoded super-block: 256 transposed levels (0–15), sixteen int16 scales (each sub-block's twice), the eight
    // mins as floats, then d and dmin as floats; padded to a multiple of 32 bytes.
    private const int ScalesAt = 256, MinsAt = 288, DAt = 320, DMinAt = 324, DecodedBytes = 352;

    protected override float LeftoverDot(byte* weightRow, long weightRowBytes, byte* activationRow, long activationRowBytes, int n) =>
        Q4_KDot.InSuperBlockOrder(weightRow, activationRow, n / 256); // 256 values per super-block

    protected override int DecodedGroupBytes => DecodedBytes;

    protected override int TransposedGroupBytes => Q8KLayout.BlockBytes;

    /// <summary>One Q4_K row into decoded super-blocks (see <see cref="DecodedBytes"/>).</summary>
    protected override void DecodeRow(byte* w, byte* decoded, int columns)
    {
        int blocks = columns / KQuantBlocks.SuperBlock;
        Vector256<byte> lowNibble = Vector256.Create((byte)0x0F);
        for (int i = 0; i < blocks; i++, w += BlockBytes, decoded += DecodedBytes)
        {
            // Chunk c holds sub-block 2c in its low nibbles and 2c+1 in its high nibbles.
            Vector256<byte> c0 = Avx.LoadVector256(w + LevelsOffset), c1 = Avx.LoadVector256(w + LevelsOffset + 32);
            Vector256<byte> c2 = Avx.LoadVector256(w + LevelsOffset + 64), c3 = Avx.LoadVector256(w + LevelsOffset + 96);
            TransposeWords8x8(
                c0 & lowNibble, Avx2.ShiftRightLogical(c0.AsUInt16(), 4).AsByte() & lowNibble,
                c1 & lowNibble, Avx2.ShiftRightLogical(c1.AsUInt16(), 4).AsByte() & lowNibble,
                c2 & lowNibble, Avx2.ShiftRightLogical(c2.AsUInt16(), 4).AsByte() & lowNibble,
                c3 & lowNibble, Avx2.ShiftRightLogical(c3.AsUInt16(), 4).AsByte() & lowNibble,
                decoded);
            KQuantScales.UnpackScaleMins(w + ScalesOffset, out ulong scales, out ulong mins);
            Avx.Store((short*)(decoded + ScalesAt), EachTwice(scales));
            Avx.Store((float*)(decoded + MinsAt), Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Vector128.CreateScalar(mins).AsByte())));
            *(float*)(decoded + DAt) = Fp16.Table[*(ushort*)(w + DOffset)];
            *(float*)(decoded + DMinAt) = Fp16.Table[*(ushort*)(w + DMinOffset)];
        }
    }

    /// <summary>Eight bytes as sixteen int16, each twice: (b0, b0, b1, b1, …, b7, b7).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> EachTwice(ulong bytes)
    {
        Vector128<byte> v = Vector128.CreateScalar(bytes).AsByte();
        return Avx2.ConvertToVector256Int16(Sse2.UnpackLow(v, v));
    }

    /// <summary>
    /// A Q8_K row with each super-block's 256 int8 values transposed as the weights are, the scale copied, and the
    /// sixteen int16 group sums replaced by the eight sub-block sums (Σx)_j as floats.
    /// </summary>
    protected override void TransposeActivations(byte* a, byte* transposed, int columns)
    {
        int blocks = columns / KQuantBlocks.SuperBlock;
        for (int i = 0; i < blocks; i++, a += Q8KLayout.BlockBytes, transposed += Q8KLayout.BlockBytes)
        {
            byte* q = a + Q8KLayout.QuantsOffset;
            TransposeWords8x8(Avx.LoadVector256(q), Avx.LoadVector256(q + 32), Avx.LoadVector256(q + 64), Avx.LoadVector256(q + 96),
                Avx.LoadVector256(q + 128), Avx.LoadVector256(q + 160), Avx.LoadVector256(q + 192), Avx.LoadVector256(q + 224),
                transposed + Q8KLayout.QuantsOffset);
            *(float*)transposed = *(float*)a;
            Vector256<int> subBlockSums = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(a + Q8KLayout.SumsOffset)), Vector256<short>.One);
            Avx.Store((float*)(transposed + Q8KLayout.SumsOffset), Avx.ConvertToVector256Single(subBlockSums));
        }
    }

    /// <summary>
    /// One decoded row times four consecutive transposed tokens over <paramref name="blocks"/> super-blocks, added to
    /// the sums carried in y[0], y[stride], … y[3·stride].
    /// </summary>
    protected override void FourTokens(byte* w, byte* x0, long tokenStride, int blocks, float* y, long outputStride)
    {
        byte* x1 = x0 + tokenStride, x2 = x1 + tokenStride, x3 = x2 + tokenStride;
        Vector128<float> sum = Vector128.Create(y[0], y[outputStride], y[2 * outputStride], y[3 * outputStride]);
        for (int i = 0; i < blocks; i++, w += DecodedBytes, x0 += Q8KLayout.BlockBytes, x1 += Q8KLayout.BlockBytes, x2 += Q8KLayout.BlockBytes, x3 += Q8KLayout.BlockBytes)
        {
            Vector256<short> p0 = Vector256<short>.Zero, p1 = p0, p2 = p0, p3 = p0;
            for (int k = 0; k < 256; k += 32)
            {
                Vector256<byte> q = Avx.LoadVector256(w + k);
                int at = Q8KLayout.QuantsOffset + k;
                p0 += Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256((sbyte*)(x0 + at)));
                p1 += Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256((sbyte*)(x1 + at)));
                p2 += Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256((sbyte*)(x2 + at)));
                p3 += Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256((sbyte*)(x3 + at)));
            }
            Vector128<float> ad = Vector128.Create(*(float*)x0, *(float*)x1, *(float*)x2, *(float*)x3);
            sum = Finish(sum, w, p0, p1, p2, p3, SubBlockSums(x0), SubBlockSums(x1), SubBlockSums(x2), SubBlockSums(x3), ad);
        }
        y[0] = sum.GetElement(0);
        y[outputStride] = sum.GetElement(1);
        y[2 * outputStride] = sum.GetElement(2);
        y[3 * outputStride] = sum.GetElement(3);
    }

    /// <summary>
    /// Two decoded rows × four tokens: each transposed activation vector is loaded once for both rows (eight int16
    /// accumulators), then each row finishes as in <see cref="FourTokens"/>.
    /// </summary>
    protected override void TwoRowsFourTokens(byte* w0, long decodedRowBytes, byte* x0, long tokenStride, int blocks, float* y, long outputStride)
    {
        byte* w1 = w0 + decodedRowBytes;
        byte* x1 = x0 + tokenStride, x2 = x1 + tokenStride, x3 = x2 + tokenStride;
        Vector128<float> sum0 = Vector128.Create(y[0], y[outputStride], y[2 * outputStride], y[3 * outputStride]);
        Vector128<float> sum1 = Vector128.Create(y[1], y[outputStride + 1], y[2 * outputStride + 1], y[3 * outputStride + 1]);
        for (int i = 0; i < blocks; i++, w0 += DecodedBytes, w1 += DecodedBytes, x0 += Q8KLayout.BlockBytes, x1 += Q8KLayout.BlockBytes, x2 += Q8KLayout.BlockBytes, x3 += Q8KLayout.BlockBytes)
        {
            Vector256<short> p00 = Vector256<short>.Zero, p01 = p00, p02 = p00, p03 = p00, p10 = p00, p11 = p00, p12 = p00, p13 = p00;
            for (int k = 0; k < 256; k += 32)
            {
                Vector256<byte> q0 = Avx.LoadVector256(w0 + k), q1 = Avx.LoadVector256(w1 + k);
                int at = Q8KLayout.QuantsOffset + k;
                Vector256<sbyte> x = Avx.LoadVector256((sbyte*)(x0 + at));
                p00 += Avx2.MultiplyAddAdjacent(q0, x); p10 += Avx2.MultiplyAddAdjacent(q1, x);
                x = Avx.LoadVector256((sbyte*)(x1 + at));
                p01 += Avx2.MultiplyAddAdjacent(q0, x); p11 += Avx2.MultiplyAddAdjacent(q1, x);
                x = Avx.LoadVector256((sbyte*)(x2 + at));
                p02 += Avx2.MultiplyAddAdjacent(q0, x); p12 += Avx2.MultiplyAddAdjacent(q1, x);
                x = Avx.LoadVector256((sbyte*)(x3 + at));
                p03 += Avx2.MultiplyAddAdjacent(q0, x); p13 += Avx2.MultiplyAddAdjacent(q1, x);
            }
            Vector128<float> ad = Vector128.Create(*(float*)x0, *(float*)x1, *(float*)x2, *(float*)x3);
            Vector256<float> s0 = SubBlockSums(x0), s1 = SubBlockSums(x1), s2 = SubBlockSums(x2), s3 = SubBlockSums(x3);
            sum0 = Finish(sum0, w0, p00, p01, p02, p03, s0, s1, s2, s3, ad);
            sum1 = Finish(sum1, w1, p10, p11, p12, p13, s0, s1, s2, s3, ad);
        }
        y[0] = sum0.GetElement(0);
        y[outputStride] = sum0.GetElement(1);
        y[2 * outputStride] = sum0.GetElement(2);
        y[3 * outputStride] = sum0.GetElement(3);
        y[1] = sum1.GetElement(0);
        y[outputStride + 1] = sum1.GetElement(1);
        y[2 * outputStride + 1] = sum1.GetElement(2);
        y[3 * outputStride + 1] = sum1.GetElement(3);
    }

    /// <summary>
    /// One row's super-block into its four tokens' sums: the level sums scaled by one vpmaddwd, and Σ m_j·(Σx)_j in
    /// float, on the FMA pipes rather than the integer multiplier: every product (≤ 63·4096) and partial sum
    /// (≤ 8·63·4096 &lt; 2²⁴) is an integer a float holds exactly, so the sums are exact in any order and equal the
    /// single-row kernel's integer minSum. Then <see cref="Q4_KDot.AddSuperBlock"/> for the four tokens at once,
    /// lane by lane the same operations in the same order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Finish(Vector128<float> sum, byte* w, Vector256<short> p0, Vector256<short> p1, Vector256<short> p2, Vector256<short> p3,
        Vector256<float> s0, Vector256<float> s1, Vector256<float> s2, Vector256<float> s3, Vector128<float> ad)
    {
        Vector256<short> scales = Avx.LoadVector256((short*)(w + ScalesAt));
        Vector128<int> levelSums = SumsOfFour(
            Avx2.MultiplyAddAdjacent(p0, scales), Avx2.MultiplyAddAdjacent(p1, scales),
            Avx2.MultiplyAddAdjacent(p2, scales), Avx2.MultiplyAddAdjacent(p3, scales));
        Vector256<float> mins = Avx.LoadVector256((float*)(w + MinsAt));
        Vector128<float> minSums = SumsOfFour(mins * s0, mins * s1, mins * s2, mins * s3);
        return sum + (ad * Vector128.Create(*(float*)(w + DAt)) * Sse2.ConvertToVector128Single(levelSums)
                    - ad * Vector128.Create(*(float*)(w + DMinAt)) * minSums);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> SubBlockSums(byte* x) => Avx.LoadVector256((float*)(x + Q8KLayout.SumsOffset));

    /// <summary>The lane sums of four float vectors, as lanes 0–3 of one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> SumsOfFour(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        Vector256<float> h = Avx.HorizontalAdd(Avx.HorizontalAdd(a, b), Avx.HorizontalAdd(c, d));
        return h.GetLower() + h.GetUpper();
    }

    /// <summary>The lane sums of four int32 vectors, as lanes 0–3 of one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> SumsOfFour(Vector256<int> a, Vector256<int> b, Vector256<int> c, Vector256<int> d)
    {
        Vector256<int> h = Avx2.HorizontalAdd(Avx2.HorizontalAdd(a, b), Avx2.HorizontalAdd(c, d));
        return h.GetLower() + h.GetUpper();
    }
}
