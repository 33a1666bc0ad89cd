using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Fathom.Quants.Formats.Q6_KFormat;

// Shift counts and shuffle masks here are built from [ConstantExpected] arguments that are literals at every
// call site once the helpers are inlined; the analyzer cannot see through the arithmetic on them.
#pragma warning disable CA1857

namespace Fathom.Quants.Formats;

/// <summary>
/// Q6_K × Q8_K dot kernels. Per super-block: d·a·Σ_g sc_g·Σ (q − 32)·x. The vector paths multiply the unsigned
/// levels q and subtract 32·Σ_g sc_g·(Σx)_g using the Q8_K group sums, which match Q6_K's 16-value groups.
/// </summary>
internal static unsafe class Q6_KDot
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static float Scalar(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int blocks)
    {
        float sum = 0;
        for (int i = 0; i < blocks; i++)
        {
            ReadOnlySpan<byte> w = weights.Slice(i * BlockBytes, BlockBytes);
            ReadOnlySpan<byte> a = activations.Slice(i * Q8KLayout.BlockBytes, Q8KLayout.BlockBytes);
            int total = 0;
            for (int g = 0; g < 16; g++)
            {
                int dot = 0;
                for (int l = 0; l < 16; l++)
                {
                    int v = 16 * g + l;
                    dot += (Level(w, v) - 32) * (sbyte)a[Q8KLayout.QuantsOffset + v];
                }
                total += (sbyte)w[ScalesOffset + g] * dot;
            }
            sum = AddSuperBlock(sum, BinaryPrimitives.ReadSingleLittleEndian(a), KQuantBlocks.ReadHalf(w, DOffset), total);
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
            Vector128<byte> low4 = Vector128.Create((byte)0x0F), low2 = Vector128.Create((byte)0x03);
            for (int i = 0; i < blocks; i++)
            {
                byte* w = wp + (long)i * BlockBytes;
                byte* a = ap + (long)i * Q8KLayout.BlockBytes;
                sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset);
                sbyte* scales = (sbyte*)(w + ScalesOffset);
                short* groupSums = (short*)(a + Q8KLayout.SumsOffset);
                int offset = 0;
                for (int g = 0; g < 16; g++) offset += scales[g] * groupSums[g];

                Vector128<int> acc = Vector128<int>.Zero;
                for (int half = 0; half < 2; half++)
                {
                    for (int h = 0; h < 2; h++)
                    {
                        Vector128<byte> ql0 = Vector128.Load(w + LowOffset + 64 * half + 16 * h);
                        Vector128<byte> ql1 = Vector128.Load(w + LowOffset + 64 * half + 32 + 16 * h);
                        Vector128<byte> qh = Vector128.Load(w + HighOffset + 32 * half + 16 * h);
                        Vector128<byte> q0 = (ql0 & low4) | ((qh & low2) << 4);
                        Vector128<byte> q1 = (ql1 & low4) | (((qh >>> 2) & low2) << 4);
                        Vector128<byte> q2 = (ql0 >>> 4) | (((qh >>> 4) & low2) << 4);
                        Vector128<byte> q3 = (ql1 >>> 4) | ((qh >>> 6) << 4);
                        sbyte* xs = x + 128 * half + 16 * h;
                        int g = 8 * half + h;
                        acc += KQuantVector.DotU8I8(q0, Vector128.Load(xs)) * scales[g]
                             + KQuantVector.DotU8I8(q1, Vector128.Load(xs + 32)) * scales[g + 2]
                             + KQuantVector.DotU8I8(q2, Vector128.Load(xs + 64)) * scales[g + 4]
                             + KQuantVector.DotU8I8(q3, Vector128.Load(xs + 96)) * scales[g + 6];
                    }
                }
                sum = AddSuperBlock(sum, *(float*)a, KQuantBlocks.ReadHalf(w + DOffset), Vector128.Sum(acc) - 32 * offset);
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
            byte* w = wp, a = ap;
            for (int i = 0; i < blocks; i++, w += BlockBytes, a += Q8KLayout.BlockBytes)
            {
                KQuantVector.PrefetchAhead(w, BlockBytes);
                Vector256<int> sumi = SuperBlockSums(w, a);
                Vector256<float> scale = Avx.BroadcastScalarToVector256(Fp16.Table + *(ushort*)(w + DOffset)) * Vector256.Create(*(float*)a);
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
            byte* w = wp, a = ap;
            for (int i = 0; i < blocks; i++, w += BlockBytes, a += Q8KLayout.BlockBytes)
            {
                KQuantVector.PrefetchAhead(w, BlockBytes);
                Vector256<short> scales = Avx2.ConvertToVector256Int16(Sse2.LoadVector128((sbyte*)(w + ScalesOffset)));
                Vector256<int> offset = Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(scales, KQuantVector.Q8KGroupSums(a)), 5);
                Vector256<int> sumi = Int8SimdWide.Fold(Half512(w, a, 0, scales) + Half512(w, a, 1, scales)) - offset;
                Vector256<float> scale = Avx.BroadcastScalarToVector256(Fp16.Table + *(ushort*)(w + DOffset)) * Vector256.Create(*(float*)a);
                acc = Fma.MultiplyAdd(scale, Avx.ConvertToVector256Single(sumi), acc);
            }
            return KQuantVector.HorizontalSum(acc);
        }
    }

    /// <summary>
    /// The float step of the scalar reference: <c>sum + a·d·Σ sc·(q − 32)·x</c> from the super-block's exact integer
    /// sum, one super-block after another (see <see cref="Q4_KDot.AddSuperBlock"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float AddSuperBlock(float sum, float ad, float d, int total) => sum + ad * d * total;

    /// <summary>
    /// A super-block's Σ sc·(q − 32)·x as eight int32 partial sums (AVX2).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SuperBlockSums(byte* w, byte* a)
    {
        Vector256<short> scales = Avx2.ConvertToVector256Int16(Sse2.LoadVector128((sbyte*)(w + ScalesOffset)));
        // 32·Σ sc_g·(Σx)_g, subtracted once instead of per value.
        Vector256<int> offset = Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(scales, KQuantVector.Q8KGroupSums(a)), 5);
        return (Half(w, a, 0, scales) + Half(w, a, 1, scales)) - offset;
    }

    /// <summary><see cref="Half"/> with two 32-value slices per 512-bit register.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Half512(byte* w, byte* a, [ConstantExpected(Min = 0, Max = 1)] int half, Vector256<short> scales)
    {
        Vector256<byte> low4 = Vector256.Create((byte)0x0F);
        Vector256<short> groupScales = KQuantVector.GroupScalesHalf(scales, half);
        Vector256<byte> qh = Avx.LoadVector256(w + HighOffset + 32 * half);
        Vector256<byte> ql0 = Avx.LoadVector256(w + LowOffset + 64 * half);
        Vector256<byte> ql1 = Avx.LoadVector256(w + LowOffset + 64 * half + 32);
        Vector256<byte> q0 = (ql0 & low4) | Avx2.ShiftLeftLogical((qh & Vector256.Create((byte)0x03)).AsUInt16(), 4).AsByte();
        Vector256<byte> q1 = (ql1 & low4) | Avx2.ShiftLeftLogical((qh & Vector256.Create((byte)0x0C)).AsUInt16(), 2).AsByte();
        Vector256<byte> q2 = (Avx2.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte() & low4) | (qh & Vector256.Create((byte)0x30));
        Vector256<byte> q3 = (Avx2.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte() & low4) | Avx2.ShiftRightLogical((qh & Vector256.Create((byte)0xC0)).AsUInt16(), 2).AsByte();
        sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset + 128 * half);
        Vector512<short> p01 = Int8SimdWide.MultiplyAddAdjacent(Vector512.Create(q0, q1), Vector512.Load(x));
        Vector512<short> p23 = Int8SimdWide.MultiplyAddAdjacent(Vector512.Create(q2, q3), Vector512.Load(x + 64));
        Vector512<short> s01 = Vector512.Create(KQuantVector.PickGroupScales(groupScales, 0), KQuantVector.PickGroupScales(groupScales, 1));
        Vector512<short> s23 = Vector512.Create(KQuantVector.PickGroupScales(groupScales, 2), KQuantVector.PickGroupScales(groupScales, 3));
        return Int8SimdWide.MultiplyAddAdjacent(p01, s01) + Int8SimdWide.MultiplyAddAdjacent(p23, s23);
    }

    /// <summary>Σ sc·q·x with unsigned q (0–63) over the 128 values of one half (groups 8h…8h+7).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Half(byte* w, byte* a, [ConstantExpected(Min = 0, Max = 1)] int half, Vector256<short> scales)
    {
        Vector256<byte> low4 = Vector256.Create((byte)0x0F);
        Vector256<short> groupScales = KQuantVector.GroupScalesHalf(scales, half);
        Vector256<byte> qh = Avx.LoadVector256(w + HighOffset + 32 * half);
        Vector256<byte> ql0 = Avx.LoadVector256(w + LowOffset + 64 * half);
        Vector256<byte> ql1 = Avx.LoadVector256(w + LowOffset + 64 * half + 32);
        // Shifts act on 16-bit lanes; every masked field stays inside its byte.
        Vector256<byte> q0 = (ql0 & low4) | Avx2.ShiftLeftLogical((qh & Vector256.Create((byte)0x03)).AsUInt16(), 4).AsByte();
        Vector256<byte> q1 = (ql1 & low4) | Avx2.ShiftLeftLogical((qh & Vector256.Create((byte)0x0C)).AsUInt16(), 2).AsByte();
        Vector256<byte> q2 = (Avx2.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte() & low4) | (qh & Vector256.Create((byte)0x30));
        Vector256<byte> q3 = (Avx2.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte() & low4) | Avx2.ShiftRightLogical((qh & Vector256.Create((byte)0xC0)).AsUInt16(), 2).AsByte();
        sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset + 128 * half);
        Vector256<short> p0 = Avx2.MultiplyAddAdjacent(q0, Avx.LoadVector256(x));
        Vector256<short> p1 = Avx2.MultiplyAddAdjacent(q1, Avx.LoadVector256(x + 32));
        Vector256<short> p2 = Avx2.MultiplyAddAdjacent(q2, Avx.LoadVector256(x + 64));
        Vector256<short> p3 = Avx2.MultiplyAddAdjacent(q3, Avx.LoadVector256(x + 96));
        return (Avx2.MultiplyAddAdjacent(p0, KQuantVector.PickGroupScales(groupScales, 0)) + Avx2.MultiplyAddAdjacent(p1, KQuantVector.PickGroupScales(groupScales, 1)))
             + (Avx2.MultiplyAddAdjacent(p2, KQuantVector.PickGroupScales(groupScales, 2)) + Avx2.MultiplyAddAdjacent(p3, KQuantVector.PickGroupScales(groupScales, 3)));
    }
}
