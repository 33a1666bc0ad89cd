using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Fathom.Quants.Formats.Q3_KFormat;

// Shift counts and shuffle masks here are built from [ConstantExpected] arguments that are literals at every
// call site once the helpers are inlined; the analyzer cannot see through the arithmetic on them.
#pragma warning disable CA1857

namespace Fathom.Quants.Formats;

/// <summary>
/// Q3_K × Q8_K dot kernels. Per super-block: d·a·Σ_g sc_g·Σ q·x with q = u − 4, u = low bits | hmask bit·4 in
/// [0, 7]. The vector paths multiply the unsigned u and subtract 4·Σ_g sc_g·(Σx)_g from the Q8_K group sums.
/// </summary>
internal static unsafe class Q3_KDot
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static float Scalar(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int blocks)
    {
        float sum = 0;
        for (int i = 0; i < blocks; i++)
        {
            ReadOnlySpan<byte> w = weights.Slice(i * BlockBytes, BlockBytes);
            ReadOnlySpan<byte> a = activations.Slice(i * Q8KLayout.BlockBytes, Q8KLayout.BlockBytes);
            ReadOnlySpan<byte> scales = w.Slice(ScalesOffset, 12);
            int total = 0;
            for (int g = 0; g < 16; g++)
            {
                int dot = 0;
                for (int l = 0; l < 16; l++)
                    dot += Level(w, 16 * g + l) * (sbyte)a[Q8KLayout.QuantsOffset + 16 * g + l];
                total += KQuantScales.ReadQ3Scale(scales, g) * dot;
            }
            sum += BinaryPrimitives.ReadSingleLittleEndian(a) * KQuantBlocks.ReadHalf(w, DOffset) * total;
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
            Vector128<byte> low2 = Vector128.Create((byte)0x03), one = Vector128.Create((byte)0x01);
            for (int i = 0; i < blocks; i++)
            {
                byte* w = wp + (long)i * BlockBytes;
                byte* a = ap + (long)i * Q8KLayout.BlockBytes;
                sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset);
                short* groupSums = (short*)(a + Q8KLayout.SumsOffset);
                Vector128<byte> biased = KQuantScales.UnpackQ3Scales(w + ScalesOffset);
                int offset = 0;
                for (int g = 0; g < 16; g++) offset += (biased[g] - 32) * groupSums[g];

                Vector128<int> acc = Vector128<int>.Zero;
                for (int h = 0; h < 2; h++)
                {
                    Vector128<byte> highBits = Vector128.Load(w + HighMaskOffset + 16 * h);
                    for (int half = 0; half < 2; half++)
                    {
                        Vector128<byte> bits = Vector128.Load(w + LevelsOffset + 32 * half + 16 * h);
                        for (int k = 0; k < 4; k++)
                        {
                            Vector128<byte> u = ((bits >>> (2 * k)) & low2) | (((highBits >>> (4 * half + k)) & one) << 2);
                            int g = 8 * half + 2 * k + h;
                            acc += KQuantVector.DotU8I8(u, Vector128.Load(x + 16 * g)) * (biased[g] - 32);
                        }
                    }
                }
                sum += *(float*)a * KQuantBlocks.ReadHalf(w + DOffset) * (Vector128.Sum(acc) - 4 * offset);
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
            Vector128<byte> bias = Vector128.Create((byte)32);
            byte* w = wp, a = ap;
            for (int i = 0; i < blocks; i++, w += BlockBytes, a += Q8KLayout.BlockBytes)
            {
                KQuantVector.PrefetchAhead(w, BlockBytes);
                Vector256<short> scales = Avx2.ConvertToVector256Int16((KQuantScales.UnpackQ3Scales(w + ScalesOffset) - bias).AsSByte());
                // 4·Σ sc_g·(Σx)_g, subtracted once instead of per value.
                Vector256<int> offset = Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(scales, KQuantVector.Q8KGroupSums(a)), 2);
                Vector256<byte> highBits = Avx.LoadVector256(w + HighMaskOffset);
                Vector256<int> sumi = (Half(w, a, 0, scales, highBits) + Half(w, a, 1, scales, highBits)) - offset;
                Vector256<float> scale = Avx.BroadcastScalarToVector256(Fp16.Table + *(ushort*)(w + DOffset)) * Vector256.Create(*(float*)a);
                acc = Fma.MultiplyAdd(scale, Avx.ConvertToVector256Single(sumi), acc);
            }
            return KQuantVector.HorizontalSum(acc);
        }
    }

    /// <summary>Σ sc·u·x with u = q + 4 (0–7) over the 128 values of one half; slice k's top bit is hmask bit 4h + k.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Half(byte* w, byte* a, [ConstantExpected(Min = 0, Max = 1)] int half, Vector256<short> scales, Vector256<byte> highBits)
    {
        Vector256<byte> low2 = Vector256.Create((byte)0x03);
        Vector256<short> groupScales = KQuantVector.GroupScalesHalf(scales, half);
        Vector256<ushort> bits = Avx.LoadVector256(w + LevelsOffset + 32 * half).AsUInt16();
        Vector256<byte> u0 = (bits.AsByte() & low2) | KQuantVector.MoveBit(highBits, 4 * half, 2);
        Vector256<byte> u1 = (Avx2.ShiftRightLogical(bits, 2).AsByte() & low2) | KQuantVector.MoveBit(highBits, 4 * half + 1, 2);
        Vector256<byte> u2 = (Avx2.ShiftRightLogical(bits, 4).AsByte() & low2) | KQuantVector.MoveBit(highBits, 4 * half + 2, 2);
        Vector256<byte> u3 = (Avx2.ShiftRightLogical(bits, 6).AsByte() & low2) | KQuantVector.MoveBit(highBits, 4 * half + 3, 2);
        sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset + 128 * half);
        Vector256<short> p0 = Avx2.MultiplyAddAdjacent(u0, Avx.LoadVector256(x));
        Vector256<short> p1 = Avx2.MultiplyAddAdjacent(u1, Avx.LoadVector256(x + 32));
        Vector256<short> p2 = Avx2.MultiplyAddAdjacent(u2, Avx.LoadVector256(x + 64));
        Vector256<short> p3 = Avx2.MultiplyAddAdjacent(u3, Avx.LoadVector256(x + 96));
        return (Avx2.MultiplyAddAdjacent(p0, KQuantVector.PickGroupScales(groupScales, 0)) + Avx2.MultiplyAddAdjacent(p1, KQuantVector.PickGroupScales(groupScales, 1)))
             + (Avx2.MultiplyAddAdjacent(p2, KQuantVector.PickGroupScales(groupScales, 2)) + Avx2.MultiplyAddAdjacent(p3, KQuantVector.PickGroupScales(groupScales, 3)));
    }
}
