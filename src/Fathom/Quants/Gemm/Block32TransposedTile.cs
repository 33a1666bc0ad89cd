using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats;

namespace Fathom.Quants.Gemm;

/// <summary>
/// A 32-value block type (Q8_0, Q5_0, IQ4_NL) × Q8_0 activations for a block of rows × a block of tokens (AVX2), with
/// groups of eight blocks transposed so that their float scaling is one vector step per eight blocks.
/// <para>
/// Each block has its own fp16 scale on both sides, so <see cref="Block32Tile{TDecoder}"/> converts and scales every
/// block's integer sum for every token: a vcvtdq2ps, a scalar d_w·d_x, a broadcast and an FMA per 32 values. Here
/// eight blocks are seen as 8 × eight 4-byte words and transposed (as <see cref="Q4_KTransposedTile"/> does), so
/// int32 lane b of every vpmaddwd result belongs to block b: the eight vectors' sums add up lane by lane into the
/// eight blocks' integer dots, which one conversion and one FMA by (d_w,b · d_x,b) finish. Levels are multiplied as
/// |q| times the activation carrying q's sign (vpsignb), as in the single-row kernels, except for types with a
/// <see cref="IBlock32Decoder.LevelOffset"/> (Q5_0): their levels are stored as q + offset (0–31, unsigned), four
/// vpmaddubsw results add up in int16 before one vpmaddwd widens them, and offset·Σx, kept per block with the
/// transposed activations, is subtracted from each block's integer sum: no vpsignb per token and 32 values, and
/// the same integer sums (so the same results) as the signed form.
/// </para>
/// <para>
/// The passes are <see cref="TransposedTile"/>'s. A row of 1408 values (DeepSeek-V2-Lite's expert down projections)
/// ends in a half group, padded with zero levels and scales. The float sums run in other lanes than the single-row
/// kernel's, so results equal the type's dot up to rounding.
/// </para>
/// </summary>
internal sealed unsafe class Block32TransposedTile<TDecoder>(WeightFormat format) : TransposedTile(format) where TDecoder : IBlock32Decoder
{
    // A decoded group: 256 transposed levels (|q| for signed types, q + offset for offset types), for signed types
    // 256 transposed q (for their signs), then eight d_w as floats.
    private static int ScalesAt => Offset ? 256 : 512;
    private static int DecodedBytes => ScalesAt + 32;
    private const int LevelsAt = 256;

    // A transposed group of activations: 256 transposed int8 values, eight d_x as floats, and for offset types the
    // eight blocks' offset·Σx as int32.
    private const int ActivationScalesAt = 256, OffsetSumsAt = 288;
    private static int TransposedBytes => Offset ? 320 : 288;

    private const int BlocksPerGroup = GroupValues / Q8_0Layout.BlockSize;

    private static bool Offset => TDecoder.LevelOffset != 0;

    protected override int DecodedGroupBytes => DecodedBytes;

    protected override int TransposedGroupBytes => TransposedBytes;

    protected override void DecodeRow(byte* w, byte* decoded, int columns)
    {
        int blocks = columns / Q8_0Layout.BlockSize;
        Vector256<sbyte>* q = stackalloc Vector256<sbyte>[BlocksPerGroup];
        Vector256<sbyte> offset = Vector256.Create((sbyte)TDecoder.LevelOffset);
        for (int first = 0; first < blocks; first += BlocksPerGroup, decoded += DecodedBytes)
        {
            int count = Math.Min(BlocksPerGroup, blocks - first);
            float* scales = (float*)(decoded + ScalesAt);
            for (int b = 0; b < BlocksPerGroup; b++)
            {
                // A partial last group: zero levels and scales contribute nothing (an offset type's padding is 0,
                // not the offset, and so is the activations' padding).
                byte* block = w + (long)(first + b) * TDecoder.BlockBytes;
                q[b] = b >= count ? Vector256<sbyte>.Zero : Offset ? TDecoder.Levels(block) + offset : TDecoder.Levels(block);
                scales[b] = b < count ? Fp16.Table[*(ushort*)block] : 0f;
            }
            if (Offset)
            {
                TransposeWords8x8(q[0].AsByte(), q[1].AsByte(), q[2].AsByte(), q[3].AsByte(),
                    q[4].AsByte(), q[5].AsByte(), q[6].AsByte(), q[7].AsByte(), decoded);
                continue;
            }
            TransposeWords8x8(Avx2.Abs(q[0]), Avx2.Abs(q[1]), Avx2.Abs(q[2]), Avx2.Abs(q[3]),
                Avx2.Abs(q[4]), Avx2.Abs(q[5]), Avx2.Abs(q[6]), Avx2.Abs(q[7]), decoded);
            TransposeWords8x8(q[0].AsByte(), q[1].AsByte(), q[2].AsByte(), q[3].AsByte(),
                q[4].AsByte(), q[5].AsByte(), q[6].AsByte(), q[7].AsByte(), decoded + LevelsAt);
        }
    }

    protected override void TransposeActivations(byte* a, byte* transposed, int columns)
    {
        int blocks = columns / Q8_0Layout.BlockSize;
        Vector256<byte>* x = stackalloc Vector256<byte>[BlocksPerGroup];
        for (int first = 0; first < blocks; first += BlocksPerGroup, transposed += TransposedBytes)
        {
            int count = Math.Min(BlocksPerGroup, blocks - first);
            float* scales = (float*)(transposed + ActivationScalesAt);
            for (int b = 0; b < BlocksPerGroup; b++)
            {
                byte* block = a + (long)(first + b) * Q8_0Layout.BlockBytes;
                x[b] = b < count ? Avx.LoadVector256(block + Q8_0Layout.QuantsOffset) : Vector256<byte>.Zero;
                scales[b] = b < count ? Fp16.Table[*(ushort*)block] : 0f;
            }
            TransposeWords8x8(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], transposed);
            if (Offset)
            {
                // Int32 lane b of the transposed vectors' byte sums is block b's Σx (|Σx| ≤ 32·128: the int16 steps hold it).
                Vector256<short> pairs = Vector256<short>.Zero;
                for (int k = 0; k < GroupValues; k += 32)
                    pairs += Avx2.MultiplyAddAdjacent(Vector256<byte>.One, Avx.LoadVector256((sbyte*)(transposed + k)));
                Vector256<int> sums = Avx2.MultiplyAddAdjacent(pairs, Vector256<short>.One);
                Avx.Store((int*)(transposed + OffsetSumsAt), sums * Vector256.Create(TDecoder.LevelOffset));
            }
        }
    }

    protected override void FourTokens(byte* w, byte* x0, long tokenStride, int groups, float* y, long outputStride)
    {
        byte* x1 = x0 + tokenStride, x2 = x1 + tokenStride, x3 = x2 + tokenStride;
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
        for (int g = 0; g < groups; g++, w += DecodedBytes, x0 += TransposedBytes, x1 += TransposedBytes, x2 += TransposedBytes, x3 += TransposedBytes)
        {
            Vector256<int> s0, s1, s2, s3;
            if (Offset)
            {
                (s0, s1, s2, s3) = FourVectorsUnsigned(w, x0, x1, x2, x3, 0);
                (Vector256<int> t0, Vector256<int> t1, Vector256<int> t2, Vector256<int> t3) = FourVectorsUnsigned(w, x0, x1, x2, x3, 128);
                s0 += t0 - Avx.LoadVector256((int*)(x0 + OffsetSumsAt));
                s1 += t1 - Avx.LoadVector256((int*)(x1 + OffsetSumsAt));
                s2 += t2 - Avx.LoadVector256((int*)(x2 + OffsetSumsAt));
                s3 += t3 - Avx.LoadVector256((int*)(x3 + OffsetSumsAt));
            }
            else
            {
                s0 = s1 = s2 = s3 = Vector256<int>.Zero;
                for (int k = 0; k < GroupValues; k += 32)
                {
                    Vector256<byte> magnitude = Avx.LoadVector256(w + k);
                    Vector256<sbyte> sign = Avx.LoadVector256((sbyte*)(w + LevelsAt + k));
                    s0 += Widen(Avx2.MultiplyAddAdjacent(magnitude, Avx2.Sign(Avx.LoadVector256((sbyte*)(x0 + k)), sign)));
                    s1 += Widen(Avx2.MultiplyAddAdjacent(magnitude, Avx2.Sign(Avx.LoadVector256((sbyte*)(x1 + k)), sign)));
                    s2 += Widen(Avx2.MultiplyAddAdjacent(magnitude, Avx2.Sign(Avx.LoadVector256((sbyte*)(x2 + k)), sign)));
                    s3 += Widen(Avx2.MultiplyAddAdjacent(magnitude, Avx2.Sign(Avx.LoadVector256((sbyte*)(x3 + k)), sign)));
                }
            }
            Vector256<float> scales = Avx.LoadVector256((float*)(w + ScalesAt));
            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s0), scales * Avx.LoadVector256((float*)(x0 + ActivationScalesAt)), acc0);
            acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s1), scales * Avx.LoadVector256((float*)(x1 + ActivationScalesAt)), acc1);
            acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s2), scales * Avx.LoadVector256((float*)(x2 + ActivationScalesAt)), acc2);
            acc3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s3), scales * Avx.LoadVector256((float*)(x3 + ActivationScalesAt)), acc3);
        }
        AddSums(y, outputStride, acc0, acc1, acc2, acc3);
    }

    /// <summary>
    /// Offset types: two decoded rows × four tokens, each activation vector loaded once for both rows; signed types
    /// take <see cref="FourTokens"/> per row (their vpsignb is per row and token, so sharing the load saves little).
    /// </summary>
    protected override void TwoRowsFourTokens(byte* w0, long decodedRowBytes, byte* x0, long tokenStride, int groups, float* y, long outputStride)
    {
        if (!Offset)
        {
            FourTokens(w0, x0, tokenStride, groups, y, outputStride);
            FourTokens(w0 + decodedRowBytes, x0, tokenStride, groups, y + 1, outputStride);
            return;
        }
        byte* w1 = w0 + decodedRowBytes;
        byte* x1 = x0 + tokenStride, x2 = x1 + tokenStride, x3 = x2 + tokenStride;
        Vector256<float> a00 = Vector256<float>.Zero, a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        for (int g = 0; g < groups; g++, w0 += DecodedBytes, w1 += DecodedBytes, x0 += TransposedBytes, x1 += TransposedBytes, x2 += TransposedBytes, x3 += TransposedBytes)
        {
            Vector256<int> s00, s01, s02, s03, s10, s11, s12, s13;
            (s00, s01, s02, s03, s10, s11, s12, s13) = TwoRowsFourVectors(w0, w1, x0, x1, x2, x3, 0);
            (Vector256<int> t00, Vector256<int> t01, Vector256<int> t02, Vector256<int> t03,
                Vector256<int> t10, Vector256<int> t11, Vector256<int> t12, Vector256<int> t13) = TwoRowsFourVectors(w0, w1, x0, x1, x2, x3, 128);
            Vector256<int> o0 = Avx.LoadVector256((int*)(x0 + OffsetSumsAt)), o1 = Avx.LoadVector256((int*)(x1 + OffsetSumsAt));
            Vector256<int> o2 = Avx.LoadVector256((int*)(x2 + OffsetSumsAt)), o3 = Avx.LoadVector256((int*)(x3 + OffsetSumsAt));
            Vector256<float> d0 = Avx.LoadVector256((float*)(x0 + ActivationScalesAt)), d1 = Avx.LoadVector256((float*)(x1 + ActivationScalesAt));
            Vector256<float> d2 = Avx.LoadVector256((float*)(x2 + ActivationScalesAt)), d3 = Avx.LoadVector256((float*)(x3 + ActivationScalesAt));
            Vector256<float> scales = Avx.LoadVector256((float*)(w0 + ScalesAt));
            a00 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s00 + t00 - o0), scales * d0, a00);
            a01 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s01 + t01 - o1), scales * d1, a01);
            a02 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s02 + t02 - o2), scales * d2, a02);
            a03 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s03 + t03 - o3), scales * d3, a03);
            scales = Avx.LoadVector256((float*)(w1 + ScalesAt));
            a10 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s10 + t10 - o0), scales * d0, a10);
            a11 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s11 + t11 - o1), scales * d1, a11);
            a12 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s12 + t12 - o2), scales * d2, a12);
            a13 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s13 + t13 - o3), scales * d3, a13);
        }
        AddSums(y, outputStride, a00, a01, a02, a03);
        AddSums(y + 1, outputStride, a10, a11, a12, a13);
    }

    /// <summary><see cref="FourVectorsUnsigned"/> for two rows sharing each activation load.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<int>, Vector256<int>, Vector256<int>, Vector256<int>, Vector256<int>, Vector256<int>, Vector256<int>, Vector256<int>) TwoRowsFourVectors(
        byte* w0, byte* w1, byte* x0, byte* x1, byte* x2, byte* x3, int at)
    {
        Vector256<short> p00 = Vector256<short>.Zero, p01 = p00, p02 = p00, p03 = p00, p10 = p00, p11 = p00, p12 = p00, p13 = p00;
        for (int k = at; k < at + 128; k += 32)
        {
            Vector256<byte> l0 = Avx.LoadVector256(w0 + k), l1 = Avx.LoadVector256(w1 + k);
            Vector256<sbyte> x = Avx.LoadVector256((sbyte*)(x0 + k));
            p00 += Avx2.MultiplyAddAdjacent(l0, x); p10 += Avx2.MultiplyAddAdjacent(l1, x);
            x = Avx.LoadVector256((sbyte*)(x1 + k));
            p01 += Avx2.MultiplyAddAdjacent(l0, x); p11 += Avx2.MultiplyAddAdjacent(l1, x);
            x = Avx.LoadVector256((sbyte*)(x2 + k));
            p02 += Avx2.MultiplyAddAdjacent(l0, x); p12 += Avx2.MultiplyAddAdjacent(l1, x);
            x = Avx.LoadVector256((sbyte*)(x3 + k));
            p03 += Avx2.MultiplyAddAdjacent(l0, x); p13 += Avx2.MultiplyAddAdjacent(l1, x);
        }
        return (Widen(p00), Widen(p01), Widen(p02), Widen(p03), Widen(p10), Widen(p11), Widen(p12), Widen(p13));
    }

    /// <summary>
    /// Four transposed vectors (bytes <paramref name="at"/> … +127 of the group) of unsigned offset levels times four
    /// tokens, their vpmaddubsw results added in int16, then widened to each block's int32 lane.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<int>, Vector256<int>, Vector256<int>, Vector256<int>) FourVectorsUnsigned(byte* w, byte* x0, byte* x1, byte* x2, byte* x3, int at)
    {
        Vector256<short> p0 = Vector256<short>.Zero, p1 = p0, p2 = p0, p3 = p0;
        for (int k = at; k < at + 128; k += 32)
        {
            Vector256<byte> levels = Avx.LoadVector256(w + k);
            p0 += Avx2.MultiplyAddAdjacent(levels, Avx.LoadVector256((sbyte*)(x0 + k)));
            p1 += Avx2.MultiplyAddAdjacent(levels, Avx.LoadVector256((sbyte*)(x1 + k)));
            p2 += Avx2.MultiplyAddAdjacent(levels, Avx.LoadVector256((sbyte*)(x2 + k)));
            p3 += Avx2.MultiplyAddAdjacent(levels, Avx.LoadVector256((sbyte*)(x3 + k)));
        }
        return (Widen(p0), Widen(p1), Widen(p2), Widen(p3));
    }

    /// <summary>Adjacent int16 pairs summed into int32 lanes (each pair belongs to one block).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Widen(Vector256<short> pairs) => Avx2.MultiplyAddAdjacent(pairs, Vector256<short>.One);
}
