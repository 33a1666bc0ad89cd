using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Fathom.Quants.Formats.Q3_KFormat;

namespace Fathom.Quants.Formats;

/// <summary>
/// Q3_K × Q8_K dot kernels. Per super-block: d·a·Σ_g sc_g·Σ q·x with q = u − 4, u = low bits | hmask bit·4 in
/// [0, 7]. The vector paths multiply the unsigned u and subtract 4·Σ_g sc_g·(Σx)_g from the Q8_K group sums.
/// </summary>
internal static unsafe class Q3_KDot
{
    public static float Scalar(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int blocks)
    {
        float sum = 0;
        for (int i = 0; i < blocks; i++)
        {
            ReadOnlySpan<byte> w = weights.Slice(i * BlockBytes, BlockBytes);
            ReadOnlySpan<byte> a = activations.Slice(i * KQuantBlocks.Q8KBytes, KQuantBlocks.Q8KBytes);
            ReadOnlySpan<byte> scales = w.Slice(ScalesOffset, 12);
            int total = 0;
            for (int g = 0; g < 16; g++)
            {
                int dot = 0;
                for (int l = 0; l < 16; l++)
                    dot += Level(w, 16 * g + l) * (sbyte)a[KQuantBlocks.Q8KValues + 16 * g + l];
                total += KQuantScales.ReadQ3Scale(scales, g) * dot;
            }
            sum += BinaryPrimitives.ReadSingleLittleEndian(a) * KQuantBlocks.ReadHalf(w, DOffset) * total;
        }
        return sum;
    }

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
                byte* a = ap + (long)i * KQuantBlocks.Q8KBytes;
                sbyte* x = (sbyte*)(a + KQuantBlocks.Q8KValues);
                short* groupSums = (short*)(a + KQuantBlocks.Q8KGroupSums);
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

    public static float WithAvx2(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int blocks)
    {
        fixed (byte* wp = weights)
        fixed (byte* ap = activations)
        {
            Vector256<float> acc = Vector256<float>.Zero;
            Vector128<byte> bias = Vector128.Create((byte)32);
            Vector256<byte> low2 = Vector256.Create((byte)0x03), bit2 = Vector256.Create((byte)0x04);
            for (int i = 0; i < blocks; i++)
            {
                byte* w = wp + (long)i * BlockBytes;
                byte* a = ap + (long)i * KQuantBlocks.Q8KBytes;
                KQuantVector.PrefetchAhead(w, BlockBytes);
                sbyte* x = (sbyte*)(a + KQuantBlocks.Q8KValues);
                Vector256<short> scales = Avx2.ConvertToVector256Int16((KQuantScales.UnpackQ3Scales(w + ScalesOffset) - bias).AsSByte());
                // 4·Σ sc_g·(Σx)_g, subtracted once instead of per value.
                Vector256<int> sumi = Vector256<int>.Zero - Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(scales, KQuantVector.Q8KGroupSums(a)), 2);
                // hmask bit k of each byte belongs to slice k; shift the next bit into place after each slice.
                Vector256<ushort> highBits = Avx.LoadVector256(w + HighMaskOffset).AsUInt16();
                for (int half = 0; half < 2; half++)
                {
                    Vector256<short> groupScales = KQuantVector.GroupScalesHalf(scales, half);
                    Vector256<ushort> bits = Avx.LoadVector256(w + LevelsOffset + 32 * half).AsUInt16();
                    sbyte* xs = x + 128 * half;
                    Vector256<byte> u0 = (bits.AsByte() & low2) | (Avx2.ShiftLeftLogical(highBits, 2).AsByte() & bit2);
                    Vector256<byte> u1 = (Avx2.ShiftRightLogical(bits, 2).AsByte() & low2) | (Avx2.ShiftLeftLogical(highBits, 1).AsByte() & bit2);
                    Vector256<byte> u2 = (Avx2.ShiftRightLogical(bits, 4).AsByte() & low2) | (highBits.AsByte() & bit2);
                    Vector256<byte> u3 = (Avx2.ShiftRightLogical(bits, 6).AsByte() & low2) | (Avx2.ShiftRightLogical(highBits, 1).AsByte() & bit2);
                    highBits = Avx2.ShiftRightLogical(highBits, 4);
                    Vector256<short> p0 = Avx2.MultiplyAddAdjacent(u0, Avx.LoadVector256(xs));
                    Vector256<short> p1 = Avx2.MultiplyAddAdjacent(u1, Avx.LoadVector256(xs + 32));
                    Vector256<short> p2 = Avx2.MultiplyAddAdjacent(u2, Avx.LoadVector256(xs + 64));
                    Vector256<short> p3 = Avx2.MultiplyAddAdjacent(u3, Avx.LoadVector256(xs + 96));
                    sumi += Avx2.MultiplyAddAdjacent(p0, KQuantVector.PickGroupScales(groupScales, 0))
                          + Avx2.MultiplyAddAdjacent(p1, KQuantVector.PickGroupScales(groupScales, 1))
                          + Avx2.MultiplyAddAdjacent(p2, KQuantVector.PickGroupScales(groupScales, 2))
                          + Avx2.MultiplyAddAdjacent(p3, KQuantVector.PickGroupScales(groupScales, 3));
                }
                acc = Fma.MultiplyAdd(Vector256.Create(*(float*)a * KQuantBlocks.ReadHalf(w + DOffset)), Avx.ConvertToVector256Single(sumi), acc);
            }
            return KQuantVector.HorizontalSum(acc);
        }
    }
}
