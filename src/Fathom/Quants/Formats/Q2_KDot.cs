using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Fathom.Quants.Formats.Q2_KFormat;

// Shift counts and shuffle masks here are built from [ConstantExpected] arguments that are literals at every
// call site once the helpers are inlined; the analyzer cannot see through the arithmetic on them.
#pragma warning disable CA1857

namespace Fathom.Quants.Formats;

/// <summary>
/// Q2_K × Q8_K dot kernels. Per super-block: d·a·Σ_g sc_g·(q·x)_g − dmin·a·Σ_g m_g·(Σx)_g, the offsets taken from
/// the Q8_K group sums, which match Q2_K's 16-value groups.
/// </summary>
internal static unsafe class Q2_KDot
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static float Scalar(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int blocks)
    {
        float sum = 0;
        for (int i = 0; i < blocks; i++)
        {
            ReadOnlySpan<byte> w = weights.Slice(i * BlockBytes, BlockBytes);
            ReadOnlySpan<byte> a = activations.Slice(i * Q8KLayout.BlockBytes, Q8KLayout.BlockBytes);
            int levelSum = 0, minSum = 0;
            for (int g = 0; g < 16; g++)
            {
                int sc = w[ScalesOffset + g];
                minSum += (sc >> 4) * BinaryPrimitives.ReadInt16LittleEndian(a[(Q8KLayout.SumsOffset + 2 * g)..]);
                int dot = 0;
                for (int l = 0; l < 16; l++)
                    dot += Level(w, 16 * g + l) * (sbyte)a[Q8KLayout.QuantsOffset + 16 * g + l];
                levelSum += (sc & 0xF) * dot;
            }
            float ad = BinaryPrimitives.ReadSingleLittleEndian(a);
            sum += ad * KQuantBlocks.ReadHalf(w, DOffset) * levelSum - ad * KQuantBlocks.ReadHalf(w, DMinOffset) * minSum;
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static float WithVector128(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int blocks)
    {
        fixed (byte* wp = weights)
        fixed (byte* ap = activations)
        {
            float sum = 0;
            Vector128<byte> low2 = Vector128.Create((byte)0x03);
            for (int i = 0; i < blocks; i++)
            {
                byte* w = wp + (long)i * BlockBytes;
                byte* a = ap + (long)i * Q8KLayout.BlockBytes;
                sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset);
                byte* scales = w + ScalesOffset;
                short* groupSums = (short*)(a + Q8KLayout.SumsOffset);
                int minSum = 0;
                for (int g = 0; g < 16; g++) minSum += (scales[g] >> 4) * groupSums[g];

                Vector128<int> acc = Vector128<int>.Zero;
                for (int half = 0; half < 2; half++)
                {
                    for (int h = 0; h < 2; h++)
                    {
                        Vector128<byte> bits = Vector128.Load(w + LevelsOffset + 32 * half + 16 * h);
                        sbyte* xs = x + 128 * half + 16 * h;
                        byte* sc = scales + 8 * half + h;
                        acc += KQuantVector.DotU8I8(bits & low2, Vector128.Load(xs)) * (sc[0] & 0xF)
                             + KQuantVector.DotU8I8((bits >>> 2) & low2, Vector128.Load(xs + 32)) * (sc[2] & 0xF)
                             + KQuantVector.DotU8I8((bits >>> 4) & low2, Vector128.Load(xs + 64)) * (sc[4] & 0xF)
                             + KQuantVector.DotU8I8(bits >>> 6, Vector128.Load(xs + 96)) * (sc[6] & 0xF);
                    }
                }
                float ad = *(float*)a;
                sum += ad * KQuantBlocks.ReadHalf(w + DOffset) * Vector128.Sum(acc) - ad * KQuantBlocks.ReadHalf(w + DMinOffset) * minSum;
            }
            return sum;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // keeps the kernel's own inlining budget for its helpers
    public static float WithAvx2(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int blocks)
    {
        fixed (byte* wp = weights)
        fixed (byte* ap = activations)
        {
            Vector256<float> acc = Vector256<float>.Zero;
            Vector128<byte> low4 = Vector128.Create((byte)0x0F);
            byte* w = wp, a = ap;
            for (int i = 0; i < blocks; i++, w += BlockBytes, a += Q8KLayout.BlockBytes)
            {
                KQuantVector.PrefetchAhead(w, BlockBytes);
                Vector256<float> ad = Vector256.Create(*(float*)a);
                Vector256<float> scale = Avx.BroadcastScalarToVector256(Fp16.Table + *(ushort*)(w + DOffset)) * ad;
                Vector256<float> minScale = Avx.BroadcastScalarToVector256(Fp16.Table + *(ushort*)(w + DMinOffset)) * ad;

                Vector128<byte> packedScales = Sse2.LoadVector128(w + ScalesOffset);
                Vector256<short> mins = Avx2.ConvertToVector256Int16(Sse2.ShiftRightLogical(packedScales.AsUInt16(), 4).AsByte() & low4);
                Vector256<int> minProducts = Avx2.MultiplyAddAdjacent(mins, KQuantVector.Q8KGroupSums(a));
                acc = Fma.MultiplyAddNegated(minScale, Avx.ConvertToVector256Single(minProducts), acc);

                // The 16 scale nibbles as bytes in both lanes: each slice's scales are then one vpshufb away.
                Vector256<byte> scaleBytes = Vector256.Create(packedScales & low4, packedScales & low4);
                Vector256<int> sumi = Half(w, a, 0, scaleBytes) + Half(w, a, 1, scaleBytes);
                acc = Fma.MultiplyAdd(scale, Avx.ConvertToVector256Single(sumi), acc);
            }
            return KQuantVector.HorizontalSum(acc);
        }
    }

    /// <summary>AVX-512: as <see cref="WithAvx2"/>, multiplying 64 values per vpmaddubsw/vpmaddwd.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static float WithAvx512(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int blocks)
    {
        fixed (byte* wp = weights)
        fixed (byte* ap = activations)
        {
            Vector256<float> acc = Vector256<float>.Zero;
            Vector128<byte> low4 = Vector128.Create((byte)0x0F);
            byte* w = wp, a = ap;
            for (int i = 0; i < blocks; i++, w += BlockBytes, a += Q8KLayout.BlockBytes)
            {
                KQuantVector.PrefetchAhead(w, BlockBytes);
                Vector256<float> ad = Vector256.Create(*(float*)a);
                Vector256<float> scale = Avx.BroadcastScalarToVector256(Fp16.Table + *(ushort*)(w + DOffset)) * ad;
                Vector256<float> minScale = Avx.BroadcastScalarToVector256(Fp16.Table + *(ushort*)(w + DMinOffset)) * ad;

                Vector128<byte> packedScales = Sse2.LoadVector128(w + ScalesOffset);
                Vector256<short> mins = Avx2.ConvertToVector256Int16(Sse2.ShiftRightLogical(packedScales.AsUInt16(), 4).AsByte() & low4);
                Vector256<int> minProducts = Avx2.MultiplyAddAdjacent(mins, KQuantVector.Q8KGroupSums(a));
                acc = Fma.MultiplyAddNegated(minScale, Avx.ConvertToVector256Single(minProducts), acc);

                Vector256<short> scales = Avx2.ConvertToVector256Int16(packedScales & low4);
                Vector256<int> sumi = Int8SimdWide.Fold(Half512(w, a, 0, scales) + Half512(w, a, 1, scales));
                acc = Fma.MultiplyAdd(scale, Avx.ConvertToVector256Single(sumi), acc);
            }
            return KQuantVector.HorizontalSum(acc);
        }
    }

    /// <summary><see cref="Half"/> with two 32-value slices per 512-bit register.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Half512(byte* w, byte* a, [ConstantExpected(Min = 0, Max = 1)] int half, Vector256<short> scales)
    {
        Vector256<byte> low2 = Vector256.Create((byte)0x03);
        Vector256<short> groupScales = KQuantVector.GroupScalesHalf(scales, half);
        Vector256<byte> bits = Avx.LoadVector256(w + LevelsOffset + 32 * half);
        sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset + 128 * half);
        Vector512<byte> q01 = Vector512.Create(bits & low2, Avx2.ShiftRightLogical(bits.AsUInt16(), 2).AsByte() & low2);
        Vector512<byte> q23 = Vector512.Create(Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & low2, Avx2.ShiftRightLogical(bits.AsUInt16(), 6).AsByte() & low2);
        Vector512<short> p01 = Int8SimdWide.MultiplyAddAdjacent(q01, Vector512.Load(x));
        Vector512<short> p23 = Int8SimdWide.MultiplyAddAdjacent(q23, Vector512.Load(x + 64));
        Vector512<short> s01 = Vector512.Create(KQuantVector.PickGroupScales(groupScales, 0), KQuantVector.PickGroupScales(groupScales, 1));
        Vector512<short> s23 = Vector512.Create(KQuantVector.PickGroupScales(groupScales, 2), KQuantVector.PickGroupScales(groupScales, 3));
        return Int8SimdWide.MultiplyAddAdjacent(p01, s01) + Int8SimdWide.MultiplyAddAdjacent(p23, s23);
    }

    /// <summary>Σ sc·q·x over the 128 values of one half (qs bytes 32h…32h+31, groups 8h…8h+7).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Half(byte* w, byte* a, [ConstantExpected(Min = 0, Max = 1)] int half, Vector256<byte> scaleBytes)
    {
        Vector256<byte> low2 = Vector256.Create((byte)0x03);
        Vector256<byte> bits = Avx.LoadVector256(w + LevelsOffset + 32 * half);
        sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset + 128 * half);
        Vector256<short> p0 = Avx2.MultiplyAddAdjacent(bits & low2, Avx.LoadVector256(x));
        Vector256<short> p1 = Avx2.MultiplyAddAdjacent(Avx2.ShiftRightLogical(bits.AsUInt16(), 2).AsByte() & low2, Avx.LoadVector256(x + 32));
        Vector256<short> p2 = Avx2.MultiplyAddAdjacent(Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & low2, Avx.LoadVector256(x + 64));
        Vector256<short> p3 = Avx2.MultiplyAddAdjacent(Avx2.ShiftRightLogical(bits.AsUInt16(), 6).AsByte() & low2, Avx.LoadVector256(x + 96));
        return (Avx2.MultiplyAddAdjacent(p0, SliceScales(scaleBytes, half, 0)) + Avx2.MultiplyAddAdjacent(p1, SliceScales(scaleBytes, half, 1)))
             + (Avx2.MultiplyAddAdjacent(p2, SliceScales(scaleBytes, half, 2)) + Avx2.MultiplyAddAdjacent(p3, SliceScales(scaleBytes, half, 3)));
    }

    /// <summary>
    /// The int16 scales of slice k of a half: group 8h+2k in the low lane (values 0–15 of the slice), 8h+2k+1 in the
    /// high lane, picked from the scale bytes with zeros (control 0x80) as high bytes, so no widening step is needed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> SliceScales(Vector256<byte> scaleBytes, [ConstantExpected(Min = 0, Max = 1)] int half, [ConstantExpected(Min = 0, Max = 3)] int k)
    {
        int group = 8 * half + 2 * k;
        Vector256<byte> control = Vector256.Create(Vector128.Create((ushort)(0x8000 | group)), Vector128.Create((ushort)(0x8000 | (group + 1)))).AsByte();
        return Avx2.Shuffle(scaleBytes, control).AsInt16();
    }
}
