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
/// eight blocks' integer dots, which one conversion and one FMA by (d_w,b · d_x,b) finish. Types whose levels are at
/// most 16 in magnitude (Q5_0) also add four vpmaddubsw results in int16 (|sum| ≤ 4·2·16·128) before widening them.
/// Levels are multiplied as |q| times the activation carrying q's sign (vpsign), as in the single-row kernels.
/// </para>
/// <para>
/// The passes are <see cref="TransposedTile"/>'s. A row of 1408 values (DeepSeek-V2-Lite's expert down projections)
/// ends in a half group, padded with zero levels and scales. The float sums run in other lanes than the single-row
/// kernel's, so results equal the type's dot up to rounding.
/// </para>
/// </summary>
internal sealed unsafe class Block32TransposedTile<TDecoder>(WeightFormat format) : TransposedTile(format) where TDecoder : IBlock32Decoder
{
    // A decoded group: 256 transposed |levels|, 256 transposed levels (for their signs), eight d_w as floats.
    private const int LevelsAt = 256, ScalesAt = 512, DecodedBytes = 544;

    // A transposed group of activations: 256 transposed int8 values, eight d_x as floats.
    private const int ActivationScalesAt = 256, TransposedBytes = 288;

    private const int BlocksPerGroup = GroupValues / Q8_0Layout.BlockSize;

    protected override int DecodedGroupBytes => DecodedBytes;

    protected override int TransposedGroupBytes => TransposedBytes;

    protected override void DecodeRow(byte* w, byte* decoded, int columns)
    {
        int blocks = columns / Q8_0Layout.BlockSize;
        Vector256<sbyte>* q = stackalloc Vector256<sbyte>[BlocksPerGroup];
        for (int first = 0; first < blocks; first += BlocksPerGroup, decoded += DecodedBytes)
        {
            int count = Math.Min(BlocksPerGroup, blocks - first);
            float* scales = (float*)(decoded + ScalesAt);
            for (int b = 0; b < BlocksPerGroup; b++)
            {
                // A partial last group: zero levels and scales contribute nothing.
                byte* block = w + (long)(first + b) * TDecoder.BlockBytes;
                q[b] = b < count ? TDecoder.Levels(block) : Vector256<sbyte>.Zero;
                scales[b] = b < count ? Fp16.Table[*(ushort*)block] : 0f;
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
        }
    }

    protected override void FourTokens(byte* w, byte* x0, long tokenStride, int groups, float* y, long outputStride)
    {
        byte* x1 = x0 + tokenStride, x2 = x1 + tokenStride, x3 = x2 + tokenStride;
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
        for (int g = 0; g < groups; g++, w += DecodedBytes, x0 += TransposedBytes, x1 += TransposedBytes, x2 += TransposedBytes, x3 += TransposedBytes)
        {
            Vector256<int> s0, s1, s2, s3;
            if (TDecoder.SmallLevels)
            {
                (s0, s1, s2, s3) = FourVectorsInt16(w, x0, x1, x2, x3, 0);
                (Vector256<int> t0, Vector256<int> t1, Vector256<int> t2, Vector256<int> t3) = FourVectorsInt16(w, x0, x1, x2, x3, 128);
                s0 += t0; s1 += t1; s2 += t2; s3 += t3;
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
        Vector256<float> h = Avx.HorizontalAdd(Avx.HorizontalAdd(acc0, acc1), Avx.HorizontalAdd(acc2, acc3));
        Vector128<float> sums = h.GetLower() + h.GetUpper();
        y[0] += sums.GetElement(0);
        y[outputStride] += sums.GetElement(1);
        y[2 * outputStride] += sums.GetElement(2);
        y[3 * outputStride] += sums.GetElement(3);
    }

    /// <summary>
    /// Four transposed vectors (bytes <paramref name="at"/> … +127 of the group) times four tokens, their vpmaddubsw
    /// results added in int16 (small levels only), then widened to each block's int32 lane.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<int>, Vector256<int>, Vector256<int>, Vector256<int>) FourVectorsInt16(byte* w, byte* x0, byte* x1, byte* x2, byte* x3, int at)
    {
        Vector256<short> p0 = Vector256<short>.Zero, p1 = p0, p2 = p0, p3 = p0;
        for (int k = at; k < at + 128; k += 32)
        {
            Vector256<byte> magnitude = Avx.LoadVector256(w + k);
            Vector256<sbyte> sign = Avx.LoadVector256((sbyte*)(w + LevelsAt + k));
            p0 += Avx2.MultiplyAddAdjacent(magnitude, Avx2.Sign(Avx.LoadVector256((sbyte*)(x0 + k)), sign));
            p1 += Avx2.MultiplyAddAdjacent(magnitude, Avx2.Sign(Avx.LoadVector256((sbyte*)(x1 + k)), sign));
            p2 += Avx2.MultiplyAddAdjacent(magnitude, Avx2.Sign(Avx.LoadVector256((sbyte*)(x2 + k)), sign));
            p3 += Avx2.MultiplyAddAdjacent(magnitude, Avx2.Sign(Avx.LoadVector256((sbyte*)(x3 + k)), sign));
        }
        return (Widen(p0), Widen(p1), Widen(p2), Widen(p3));
    }

    /// <summary>Adjacent int16 pairs summed into int32 lanes (each pair belongs to one block).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Widen(Vector256<short> pairs) => Avx2.MultiplyAddAdjacent(pairs, Vector256<short>.One);
}
