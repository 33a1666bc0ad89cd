using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Fathom.Quants.Formats.Q5_KFormat;

// Shift counts and shuffle masks here are built from [ConstantExpected] arguments that are literals at every
// call site once the helpers are inlined; the analyzer cannot see through the arithmetic on them.
#pragma warning disable CA1857

namespace Fathom.Quants.Formats;

/// <summary>
/// Q5_K × Q8_K dot kernels. Per super-block: d·a·Σ sc_j·(q·x)_j − dmin·a·Σ m_j·(Σx)_j, with the activation sums
/// (Σx)_j of the 32-value sub-blocks from the Q8_K group sums.
/// </summary>
internal static unsafe class Q5_KDot
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
            int levelSum = 0, minSum = 0;
            for (int j = 0; j < 8; j++)
            {
                KQuantScales.ReadScaleMin(scales, j, out int sc, out int m);
                int groupSum = BinaryPrimitives.ReadInt16LittleEndian(a[(Q8KLayout.SumsOffset + 4 * j)..])
                             + BinaryPrimitives.ReadInt16LittleEndian(a[(Q8KLayout.SumsOffset + 4 * j + 2)..]);
                minSum += m * groupSum;
                int dot = 0;
                for (int l = 0; l < 32; l++) dot += Level(w, 32 * j + l) * (sbyte)a[Q8KLayout.QuantsOffset + 32 * j + l];
                levelSum += sc * dot;
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
            Vector128<byte> low4 = Vector128.Create((byte)0x0F), one = Vector128.Create((byte)0x01);
            for (int i = 0; i < blocks; i++)
            {
                byte* w = wp + (long)i * BlockBytes;
                byte* a = ap + (long)i * Q8KLayout.BlockBytes;
                sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset);
                short* groupSums = (short*)(a + Q8KLayout.SumsOffset);
                KQuantScales.UnpackScaleMins(w + ScalesOffset, out ulong scales, out ulong mins);
                int minSum = 0;
                for (int j = 0; j < 8; j++) minSum += (int)((mins >> (8 * j)) & 0xFF) * (groupSums[2 * j] + groupSums[2 * j + 1]);

                Vector128<int> acc = Vector128<int>.Zero;
                for (int h = 0; h < 2; h++)
                {
                    Vector128<byte> highBits = Vector128.Load(w + HighOffset + 16 * h);
                    for (int chunk = 0; chunk < 4; chunk++)
                    {
                        Vector128<byte> bits = Vector128.Load(w + LevelsOffset + 32 * chunk + 16 * h);
                        Vector128<byte> q0 = (bits & low4) | (((highBits >>> (2 * chunk)) & one) << 4);
                        Vector128<byte> q1 = (bits >>> 4) | (((highBits >>> (2 * chunk + 1)) & one) << 4);
                        sbyte* xs = x + 64 * chunk + 16 * h;
                        acc += KQuantVector.DotU8I8(q0, Vector128.Load(xs)) * (int)((scales >> (16 * chunk)) & 0xFF)
                             + KQuantVector.DotU8I8(q1, Vector128.Load(xs + 32)) * (int)((scales >> (16 * chunk + 8)) & 0xFF);
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
            Vector128<float> accMins = Vector128<float>.Zero;
            byte* w = wp, a = ap;
            for (int i = 0; i < blocks; i++, w += BlockBytes, a += Q8KLayout.BlockBytes)
            {
                KQuantVector.PrefetchAhead(w, BlockBytes);
                float ad = *(float*)a;
                Vector256<float> scale = Avx.BroadcastScalarToVector256(Fp16.Table + *(ushort*)(w + DOffset)) * Vector256.Create(ad);
                Vector128<float> minScale = Avx.BroadcastScalarToVector128(Fp16.Table + *(ushort*)(w + DMinOffset)) * Vector128.Create(ad);
                Vector256<byte> scaleBytes = KQuantVector.SubBlockScales(w + ScalesOffset, a, minScale, ref accMins);
                Vector256<byte> highBits = Avx.LoadVector256(w + HighOffset);
                Vector256<int> sumi = (Chunk(w, a, 0, scaleBytes, highBits) + Chunk(w, a, 1, scaleBytes, highBits))
                                    + (Chunk(w, a, 2, scaleBytes, highBits) + Chunk(w, a, 3, scaleBytes, highBits));
                acc = Fma.MultiplyAdd(scale, Avx.ConvertToVector256Single(sumi), acc);
            }
            return KQuantVector.HorizontalSum(acc) + KQuantVector.HorizontalSum(accMins);
        }
    }

    /// <summary>Σ sc·q·x of the 64 values of one qs chunk (sub-blocks 2c and 2c+1; fifth bits are qh bits 2c and 2c+1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Chunk(byte* w, byte* a, [ConstantExpected(Min = 0, Max = 3)] int chunk, Vector256<byte> scaleBytes, Vector256<byte> highBits)
    {
        Vector256<byte> lowNibble = Vector256.Create((byte)0x0F);
        Vector256<byte> bits = Avx.LoadVector256(w + LevelsOffset + 32 * chunk);
        Vector256<byte> low = (bits & lowNibble) | KQuantVector.MoveBit(highBits, 2 * chunk, 4);
        Vector256<byte> high = (Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & lowNibble) | KQuantVector.MoveBit(highBits, 2 * chunk + 1, 4);
        sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset + 64 * chunk);
        Vector256<short> pLow = Avx2.MultiplyAddAdjacent(low, Avx.LoadVector256(x));
        Vector256<short> pHigh = Avx2.MultiplyAddAdjacent(high, Avx.LoadVector256(x + 32));
        Vector256<short> scaleLow = Avx2.Shuffle(scaleBytes, KQuantVector.ZeroExtendByteMask(2 * chunk)).AsInt16();
        Vector256<short> scaleHigh = Avx2.Shuffle(scaleBytes, KQuantVector.ZeroExtendByteMask(2 * chunk + 1)).AsInt16();
        return Avx2.MultiplyAddAdjacent(pLow, scaleLow) + Avx2.MultiplyAddAdjacent(pHigh, scaleHigh);
    }
}
