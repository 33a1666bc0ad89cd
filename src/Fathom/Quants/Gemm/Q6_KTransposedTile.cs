using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats;
using static Fathom.Quants.Formats.Q6_KFormat;

namespace Fathom.Quants.Gemm;

/// <summary>
/// Q6_K × Q8_K for a block of rows × a block of tokens (AVX2), with both sides' super-blocks transposed so that one
/// vpmaddwd applies all sixteen group scales to two vpmaddubsw results.
/// <para>
/// A super-block's 256 values are sixteen 16-value groups with signed 8-bit scales; levels are 6-bit (0–63) with a
/// bias of 32. Each super-block, seen as 16 groups × eight 2-byte words, is transposed (two 8×8 transposes of 16-bit
/// words, groups 0–7 in the low 128-bit lane and 8–15 in the high one), so that int16 lane g of every vpmaddubsw
/// result belongs to group g. Two such results add up in int16 (|sum| ≤ 2·2·63·128 = 32256) before one vpmaddwd by
/// the group scales: twelve multiplies per 256 values instead of sixteen, plus one for the bias, taken off as
/// 32·Σ sc_g·(Σx)_g from the Q8_K group sums as in the single-row kernel.
/// </para>
/// <para>
/// The passes are <see cref="TransposedTile"/>'s. The float step stays in the lanes, as in
/// <see cref="Q4_KTransposedTile"/>: each super-block's eight int32 lanes (group pairs) are converted and added to a
/// per-(row, token) accumulator times d·d_x, and summed once per row and pass (a first version added each
/// super-block's horizontal integer sum with the scalar reference's step, which cost more than a fifth of the tile).
/// Results equal the dot up to float rounding.
/// </para>
/// </summary>
internal sealed unsafe class Q6_KTransposedTile(WeightFormat format) : TransposedTile(format)
{
    // A decoded super-block: 256 transposed levels (0–63), sixteen int16 group scales, d as a float; padded to a
    // multiple of 32 bytes.
    private const int ScalesAt = 256, DAt = 288, DecodedBytes = 320;

    // A transposed super-block of activations: 256 transposed int8 values, the sixteen int16 group sums, then d_x;
    // a multiple of 32 bytes so that every vector load is aligned.
    private const int SumsAt = 256, ActivationScaleAt = 288, TransposedBytes = 320;

    protected override int DecodedGroupBytes => DecodedBytes;

    protected override int TransposedGroupBytes => TransposedBytes;

    /// <summary>One Q6_K row into decoded super-blocks (see <see cref="DecodedBytes"/>).</summary>
    protected override void DecodeRow(byte* w, byte* decoded, int columns)
    {
        int blocks = columns / KQuantBlocks.SuperBlock;
        Vector256<byte> low4 = Vector256.Create((byte)0x0F);
        for (int i = 0; i < blocks; i++, w += BlockBytes, decoded += DecodedBytes)
        {
            // Values 128h + 32k … +31 (k = 0–3) are the low (k < 2) or high (k ≥ 2) nibbles of ql[64h + 32(k&1) …]
            // with bits 2k, 2k+1 of qh[32h …] on top, as in the single-row kernel.
            Vector256<byte> qh = Avx.LoadVector256(w + HighOffset), ql0 = Avx.LoadVector256(w + LowOffset), ql1 = Avx.LoadVector256(w + LowOffset + 32);
            Vector256<byte> v0 = (ql0 & low4) | Avx2.ShiftLeftLogical((qh & Vector256.Create((byte)0x03)).AsUInt16(), 4).AsByte();
            Vector256<byte> v1 = (ql1 & low4) | Avx2.ShiftLeftLogical((qh & Vector256.Create((byte)0x0C)).AsUInt16(), 2).AsByte();
            Vector256<byte> v2 = (Avx2.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte() & low4) | (qh & Vector256.Create((byte)0x30));
            Vector256<byte> v3 = (Avx2.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte() & low4) | Avx2.ShiftRightLogical((qh & Vector256.Create((byte)0xC0)).AsUInt16(), 2).AsByte();
            qh = Avx.LoadVector256(w + HighOffset + 32); ql0 = Avx.LoadVector256(w + LowOffset + 64); ql1 = Avx.LoadVector256(w + LowOffset + 96);
            Vector256<byte> v4 = (ql0 & low4) | Avx2.ShiftLeftLogical((qh & Vector256.Create((byte)0x03)).AsUInt16(), 4).AsByte();
            Vector256<byte> v5 = (ql1 & low4) | Avx2.ShiftLeftLogical((qh & Vector256.Create((byte)0x0C)).AsUInt16(), 2).AsByte();
            Vector256<byte> v6 = (Avx2.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte() & low4) | (qh & Vector256.Create((byte)0x30));
            Vector256<byte> v7 = (Avx2.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte() & low4) | Avx2.ShiftRightLogical((qh & Vector256.Create((byte)0xC0)).AsUInt16(), 2).AsByte();
            // Group g is the low (g even) or high (g odd) 16 bytes of v[g/2]; the transpose wants groups j and j+8 together.
            Transpose16x8(
                Avx2.Permute2x128(v0, v4, 0x20), Avx2.Permute2x128(v0, v4, 0x31), Avx2.Permute2x128(v1, v5, 0x20), Avx2.Permute2x128(v1, v5, 0x31),
                Avx2.Permute2x128(v2, v6, 0x20), Avx2.Permute2x128(v2, v6, 0x31), Avx2.Permute2x128(v3, v7, 0x20), Avx2.Permute2x128(v3, v7, 0x31),
                decoded);
            Avx.Store((short*)(decoded + ScalesAt), Avx2.ConvertToVector256Int16(Sse2.LoadVector128((sbyte*)(w + ScalesOffset))));
            *(float*)(decoded + DAt) = Fp16.Table[*(ushort*)(w + DOffset)];
        }
    }

    protected override void TransposeActivations(byte* a, byte* transposed, int columns)
    {
        int blocks = columns / KQuantBlocks.SuperBlock;
        for (int i = 0; i < blocks; i++, a += Q8KLayout.BlockBytes, transposed += TransposedBytes)
        {
            byte* q = a + Q8KLayout.QuantsOffset;
            Transpose16x8(Groups(q, 0), Groups(q, 1), Groups(q, 2), Groups(q, 3), Groups(q, 4), Groups(q, 5), Groups(q, 6), Groups(q, 7),
                transposed);
            Avx.Store(transposed + SumsAt, Avx.LoadVector256(a + Q8KLayout.SumsOffset));
            *(float*)(transposed + ActivationScaleAt) = *(float*)(a + Q8KLayout.ScaleOffset);
        }
    }

    /// <summary>Groups j and j + 8 (16 bytes each) of a super-block's values, in the low and high lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Groups(byte* q, int j) => Vector256.Create(Sse2.LoadVector128(q + 16 * j), Sse2.LoadVector128(q + 128 + 16 * j));

    /// <summary>
    /// In each 128-bit lane, rows r0–r7 of eight 16-bit words stored as their eight columns: column k = word k of
    /// r0 … r7 (low lane), then of the high lanes' rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose16x8(Vector256<byte> r0, Vector256<byte> r1, Vector256<byte> r2, Vector256<byte> r3,
        Vector256<byte> r4, Vector256<byte> r5, Vector256<byte> r6, Vector256<byte> r7, byte* destination)
    {
        Vector256<short> a0 = Avx2.UnpackLow(r0.AsInt16(), r1.AsInt16()), a1 = Avx2.UnpackHigh(r0.AsInt16(), r1.AsInt16());
        Vector256<short> a2 = Avx2.UnpackLow(r2.AsInt16(), r3.AsInt16()), a3 = Avx2.UnpackHigh(r2.AsInt16(), r3.AsInt16());
        Vector256<short> a4 = Avx2.UnpackLow(r4.AsInt16(), r5.AsInt16()), a5 = Avx2.UnpackHigh(r4.AsInt16(), r5.AsInt16());
        Vector256<short> a6 = Avx2.UnpackLow(r6.AsInt16(), r7.AsInt16()), a7 = Avx2.UnpackHigh(r6.AsInt16(), r7.AsInt16());
        Vector256<int> b0 = Avx2.UnpackLow(a0.AsInt32(), a2.AsInt32()), b1 = Avx2.UnpackHigh(a0.AsInt32(), a2.AsInt32());
        Vector256<int> b2 = Avx2.UnpackLow(a1.AsInt32(), a3.AsInt32()), b3 = Avx2.UnpackHigh(a1.AsInt32(), a3.AsInt32());
        Vector256<int> b4 = Avx2.UnpackLow(a4.AsInt32(), a6.AsInt32()), b5 = Avx2.UnpackHigh(a4.AsInt32(), a6.AsInt32());
        Vector256<int> b6 = Avx2.UnpackLow(a5.AsInt32(), a7.AsInt32()), b7 = Avx2.UnpackHigh(a5.AsInt32(), a7.AsInt32());
        Avx.Store((long*)destination, Avx2.UnpackLow(b0.AsInt64(), b4.AsInt64()));
        Avx.Store((long*)(destination + 32), Avx2.UnpackHigh(b0.AsInt64(), b4.AsInt64()));
        Avx.Store((long*)(destination + 64), Avx2.UnpackLow(b1.AsInt64(), b5.AsInt64()));
        Avx.Store((long*)(destination + 96), Avx2.UnpackHigh(b1.AsInt64(), b5.AsInt64()));
        Avx.Store((long*)(destination + 128), Avx2.UnpackLow(b2.AsInt64(), b6.AsInt64()));
        Avx.Store((long*)(destination + 160), Avx2.UnpackHigh(b2.AsInt64(), b6.AsInt64()));
        Avx.Store((long*)(destination + 192), Avx2.UnpackLow(b3.AsInt64(), b7.AsInt64()));
        Avx.Store((long*)(destination + 224), Avx2.UnpackHigh(b3.AsInt64(), b7.AsInt64()));
    }

    protected override void FourTokens(byte* w, byte* x0, long tokenStride, int blocks, float* y, long outputStride)
    {
        byte* x1 = x0 + tokenStride, x2 = x1 + tokenStride, x3 = x2 + tokenStride;
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
        for (int i = 0; i < blocks; i++, w += DecodedBytes, x0 += TransposedBytes, x1 += TransposedBytes, x2 += TransposedBytes, x3 += TransposedBytes)
        {
            Vector256<short> scales = Avx.LoadVector256((short*)(w + ScalesAt));
            // The bias first: −32·Σ sc_g·(Σx)_g.
            Vector256<int> s0 = Bias(scales, x0), s1 = Bias(scales, x1), s2 = Bias(scales, x2), s3 = Bias(scales, x3);
            for (int k = 0; k < 256; k += 64)
            {
                Vector256<byte> qa = Avx.LoadVector256(w + k), qb = Avx.LoadVector256(w + k + 32);
                s0 += Pair(qa, qb, scales, x0 + k);
                s1 += Pair(qa, qb, scales, x1 + k);
                s2 += Pair(qa, qb, scales, x2 + k);
                s3 += Pair(qa, qb, scales, x3 + k);
            }
            Vector256<float> d = Vector256.Create(*(float*)(w + DAt));
            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s0), d * Vector256.Create(*(float*)(x0 + ActivationScaleAt)), acc0);
            acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s1), d * Vector256.Create(*(float*)(x1 + ActivationScaleAt)), acc1);
            acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s2), d * Vector256.Create(*(float*)(x2 + ActivationScaleAt)), acc2);
            acc3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s3), d * Vector256.Create(*(float*)(x3 + ActivationScaleAt)), acc3);
        }
        AddSums(y, outputStride, acc0, acc1, acc2, acc3);
    }

    /// <summary>−32·sc_g·(Σx)_g per group pair, as eight int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Bias(Vector256<short> scales, byte* x) =>
        Vector256<int>.Zero - Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(scales, Avx.LoadVector256((short*)(x + SumsAt))), 5);

    /// <summary>Two transposed vectors of levels times the token's: their int16 products summed, then scaled per group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Pair(Vector256<byte> qa, Vector256<byte> qb, Vector256<short> scales, byte* x) =>
        Avx2.MultiplyAddAdjacent(
            Avx2.MultiplyAddAdjacent(qa, Avx.LoadVector256((sbyte*)x)) + Avx2.MultiplyAddAdjacent(qb, Avx.LoadVector256((sbyte*)x + 32)),
            scales);
}
