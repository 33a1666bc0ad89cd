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
/// with its own vpmaddwd: two multiplies per 32 values and token. Here each super-block, seen as 8 sub-blocks × eight
/// 4-byte words, is transposed (an 8×8 transpose of 32-bit words), so that vector k holds word k of every sub-block
/// and int16 lanes 2j, 2j+1 of each vpmaddubsw result belong to sub-block j. The eight vpmaddubsw results of a
/// super-block then add up in int16 (|sum| ≤ 8·2·15·128 = 30720, no overflow) and a single vpmaddwd by (sc_j, sc_j)
/// per lane pair scales them all: nine multiplies per 256 values instead of sixteen.
/// </para>
/// <para>
/// The float step stays in the lanes: int32 lane j of that vpmaddwd is sub-block j's scaled level sum, which is
/// converted and added to a per-(row, token) float accumulator times d·d_x, and the mins term as one FMA of the
/// row's dmin·m_j (decoded once per row) with the token's d_x·(Σx)_j (transposed once per token); the eight lanes are
/// summed once per row and pass. A first version finished every super-block with the scalar reference's step instead
/// (its exact integer sums, horizontally added, then sum + a·d·Σ − a·dmin·Σ, bit-identical to the scalar dot), and
/// those horizontal sums and scalar steps took about 40 % of the tile's time. Results equal the dot up to float
/// rounding, as the single-row vector kernels do.
/// </para>
/// <para>
/// The passes are <see cref="TransposedTile"/>'s: weight rows decoded once per tile (nibbles split, transposed,
/// scales widened to int16, dmin·m_j and d as floats), tokens transposed once per tile, then two rows × four tokens
/// at a time.
/// </para>
/// </summary>
internal sealed unsafe class Q4_KTransposedTile(WeightFormat format) : TransposedTile(format)
{
    // A decoded super-block: 256 transposed levels (0–15), sixteen int16 scales (each sub-block's twice), the eight
    // dmin·m_j as floats, then d as a float; padded to a multiple of 32 bytes.
    private const int ScalesAt = 256, MinsAt = 288, DAt = 320, DecodedBytes = 352;

    // A transposed super-block of activations: 256 transposed int8 values, the eight d_x·(Σx)_j as floats, then d_x;
    // a multiple of 32 bytes so that every vector load is aligned.
    private const int SumsAt = 256, ActivationScaleAt = 288, TransposedBytes = 320;

    protected override int DecodedGroupBytes => DecodedBytes;

    protected override int TransposedGroupBytes => TransposedBytes;

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
            Vector256<float> m = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Vector128.CreateScalar(mins).AsByte()));
            Avx.Store((float*)(decoded + MinsAt), m * Vector256.Create(Fp16.Table[*(ushort*)(w + DMinOffset)]));
            *(float*)(decoded + DAt) = Fp16.Table[*(ushort*)(w + DOffset)];
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
    /// A Q8_K row with each super-block's 256 int8 values transposed as the weights are, then the eight sub-block
    /// sums times the block's scale, d_x·(Σx)_j, as floats, then d_x (see <see cref="TransposedBytes"/>).
    /// </summary>
    protected override void TransposeActivations(byte* a, byte* transposed, int columns)
    {
        int blocks = columns / KQuantBlocks.SuperBlock;
        for (int i = 0; i < blocks; i++, a += Q8KLayout.BlockBytes, transposed += TransposedBytes)
        {
            byte* q = a + Q8KLayout.QuantsOffset;
            TransposeWords8x8(Avx.LoadVector256(q), Avx.LoadVector256(q + 32), Avx.LoadVector256(q + 64), Avx.LoadVector256(q + 96),
                Avx.LoadVector256(q + 128), Avx.LoadVector256(q + 160), Avx.LoadVector256(q + 192), Avx.LoadVector256(q + 224),
                transposed);
            float scale = *(float*)(a + Q8KLayout.ScaleOffset);
            Vector256<int> subBlockSums = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(a + Q8KLayout.SumsOffset)), Vector256<short>.One);
            Avx.Store((float*)(transposed + SumsAt), Avx.ConvertToVector256Single(subBlockSums) * Vector256.Create(scale));
            *(float*)(transposed + ActivationScaleAt) = scale;
        }
    }

    /// <summary>
    /// One decoded row times four consecutive transposed tokens over <paramref name="blocks"/> super-blocks, added to
    /// the sums carried in y[0], y[stride], … y[3·stride].
    /// </summary>
    protected override void FourTokens(byte* w, byte* x0, long tokenStride, int blocks, float* y, long outputStride)
    {
        byte* x1 = x0 + tokenStride, x2 = x1 + tokenStride, x3 = x2 + tokenStride;
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
        for (int i = 0; i < blocks; i++, w += DecodedBytes, x0 += TransposedBytes, x1 += TransposedBytes, x2 += TransposedBytes, x3 += TransposedBytes)
        {
            Vector256<short> p0 = Vector256<short>.Zero, p1 = p0, p2 = p0, p3 = p0;
            for (int k = 0; k < 256; k += 32)
            {
                Vector256<byte> q = Avx.LoadVector256(w + k);
                p0 += Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256((sbyte*)(x0 + k)));
                p1 += Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256((sbyte*)(x1 + k)));
                p2 += Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256((sbyte*)(x2 + k)));
                p3 += Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256((sbyte*)(x3 + k)));
            }
            Vector256<short> scales = Avx.LoadVector256((short*)(w + ScalesAt));
            Vector256<float> d = Vector256.Create(*(float*)(w + DAt)), mins = Avx.LoadVector256((float*)(w + MinsAt));
            acc0 = Step(acc0, p0, scales, d, mins, x0);
            acc1 = Step(acc1, p1, scales, d, mins, x1);
            acc2 = Step(acc2, p2, scales, d, mins, x2);
            acc3 = Step(acc3, p3, scales, d, mins, x3);
        }
        AddSums(y, outputStride, acc0, acc1, acc2, acc3);
    }

    /// <summary>
    /// Two decoded rows × four tokens: each transposed activation vector is loaded once for both rows. Eight int16
    /// and eight float accumulators and the operands need more than the sixteen vector registers; the JIT keeps the
    /// float ones on the stack between super-blocks, which measured faster than an explicit stack array (in-cache
    /// tile, 88 against 84 MAC/ns).
    /// </summary>
    protected override void TwoRowsFourTokens(byte* w0, long decodedRowBytes, byte* x0, long tokenStride, int blocks, float* y, long outputStride)
    {
        byte* w1 = w0 + decodedRowBytes;
        byte* x1 = x0 + tokenStride, x2 = x1 + tokenStride, x3 = x2 + tokenStride;
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int i = 0; i < blocks; i++, w0 += DecodedBytes, w1 += DecodedBytes, x0 += TransposedBytes, x1 += TransposedBytes, x2 += TransposedBytes, x3 += TransposedBytes)
        {
            Vector256<short> p00 = Vector256<short>.Zero, p01 = p00, p02 = p00, p03 = p00, p10 = p00, p11 = p00, p12 = p00, p13 = p00;
            for (int k = 0; k < 256; k += 32)
            {
                Vector256<byte> q0 = Avx.LoadVector256(w0 + k), q1 = Avx.LoadVector256(w1 + k);
                Vector256<sbyte> x = Avx.LoadVector256((sbyte*)(x0 + k));
                p00 += Avx2.MultiplyAddAdjacent(q0, x); p10 += Avx2.MultiplyAddAdjacent(q1, x);
                x = Avx.LoadVector256((sbyte*)(x1 + k));
                p01 += Avx2.MultiplyAddAdjacent(q0, x); p11 += Avx2.MultiplyAddAdjacent(q1, x);
                x = Avx.LoadVector256((sbyte*)(x2 + k));
                p02 += Avx2.MultiplyAddAdjacent(q0, x); p12 += Avx2.MultiplyAddAdjacent(q1, x);
                x = Avx.LoadVector256((sbyte*)(x3 + k));
                p03 += Avx2.MultiplyAddAdjacent(q0, x); p13 += Avx2.MultiplyAddAdjacent(q1, x);
            }
            Vector256<short> scales = Avx.LoadVector256((short*)(w0 + ScalesAt));
            Vector256<float> d = Vector256.Create(*(float*)(w0 + DAt)), mins = Avx.LoadVector256((float*)(w0 + MinsAt));
            a0 = Step(a0, p00, scales, d, mins, x0);
            a1 = Step(a1, p01, scales, d, mins, x1);
            a2 = Step(a2, p02, scales, d, mins, x2);
            a3 = Step(a3, p03, scales, d, mins, x3);
            scales = Avx.LoadVector256((short*)(w1 + ScalesAt));
            d = Vector256.Create(*(float*)(w1 + DAt));
            mins = Avx.LoadVector256((float*)(w1 + MinsAt));
            a4 = Step(a4, p10, scales, d, mins, x0);
            a5 = Step(a5, p11, scales, d, mins, x1);
            a6 = Step(a6, p12, scales, d, mins, x2);
            a7 = Step(a7, p13, scales, d, mins, x3);
        }
        AddSums(y, outputStride, a0, a1, a2, a3);
        AddSums(y + 1, outputStride, a4, a5, a6, a7);
    }

    /// <summary>
    /// One super-block of one (row, token) into its lane accumulator: lane j gains d·d_x·sc_j·Σ(q·x)_j −
    /// dmin·m_j·d_x·(Σx)_j.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Step(Vector256<float> acc, Vector256<short> levelProducts, Vector256<short> scales, Vector256<float> d,
        Vector256<float> mins, byte* x)
    {
        Vector256<float> levelSums = Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(levelProducts, scales));
        acc = Fma.MultiplyAdd(levelSums, d * Vector256.Create(*(float*)(x + ActivationScaleAt)), acc);
        return Fma.MultiplyAddNegated(mins, Avx.LoadVector256((float*)(x + SumsAt)), acc);
    }
}
