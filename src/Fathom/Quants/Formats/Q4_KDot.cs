using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Fathom.Quants.Formats.Q4_KFormat;

// Shift counts and shuffle masks here are built from [ConstantExpected] arguments that are literals at every
// call site once the helpers are inlined; the analyzer cannot see through the arithmetic on them.
#pragma warning disable CA1857

namespace Fathom.Quants.Formats;

/// <summary>
/// Q4_K × Q8_K dot kernels. Per super-block: d·a·Σ sc_j·(q·x)_j − dmin·a·Σ m_j·(Σx)_j, where the activation sums
/// (Σx)_j come from the Q8_K group sums, so the offsets cost one small product instead of a pass over the values.
/// </summary>
internal static unsafe class Q4_KDot
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static float Scalar(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int blocks)
    {
        float sum = 0;
        for (int i = 0; i < blocks; i++)
        {
            ReadOnlySpan<byte> w = weights.Slice(i * BlockBytes, BlockBytes);
            ReadOnlySpan<byte> a = activations.Slice(i * Q8KLayout.BlockBytes, Q8KLayout.BlockBytes);
            ReadOnlySpan<sbyte> x = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(a.Slice(Q8KLayout.QuantsOffset, 256));
            ReadOnlySpan<byte> scales = w.Slice(ScalesOffset, 12);
            int levelSum = 0, minSum = 0;
            for (int j = 0; j < 8; j++)
            {
                KQuantScales.ReadScaleMin(scales, j, out int sc, out int m);
                int groupSum = BinaryPrimitives.ReadInt16LittleEndian(a[(Q8KLayout.SumsOffset + 4 * j)..])
                             + BinaryPrimitives.ReadInt16LittleEndian(a[(Q8KLayout.SumsOffset + 4 * j + 2)..]);
                minSum += m * groupSum;
                int shift = 4 * (j & 1);
                ReadOnlySpan<byte> q = w.Slice(LevelsOffset + 32 * (j >> 1), 32);
                int dot = 0;
                for (int l = 0; l < 32; l++) dot += ((q[l] >> shift) & 0xF) * x[32 * j + l];
                levelSum += sc * dot;
            }
            sum = AddSuperBlock(sum, BinaryPrimitives.ReadSingleLittleEndian(a), KQuantBlocks.ReadHalf(w, DOffset), KQuantBlocks.ReadHalf(w, DMinOffset), levelSum, minSum);
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
            Vector128<byte> lowNibble = Vector128.Create((byte)0x0F);
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
                for (int chunk = 0; chunk < 4; chunk++)
                {
                    byte* q = w + LevelsOffset + 32 * chunk;
                    sbyte* xc = x + 64 * chunk;
                    Vector128<byte> q0 = Vector128.Load(q), q1 = Vector128.Load(q + 16);
                    Vector128<int> low = KQuantVector.DotU8I8(q0 & lowNibble, Vector128.Load(xc))
                                       + KQuantVector.DotU8I8(q1 & lowNibble, Vector128.Load(xc + 16));
                    Vector128<int> high = KQuantVector.DotU8I8(Vector128.ShiftRightLogical(q0, 4), Vector128.Load(xc + 32))
                                        + KQuantVector.DotU8I8(Vector128.ShiftRightLogical(q1, 4), Vector128.Load(xc + 48));
                    acc += low * (int)((scales >> (16 * chunk)) & 0xFF) + high * (int)((scales >> (16 * chunk + 8)) & 0xFF);
                }
                sum = AddSuperBlock(sum, *(float*)a, KQuantBlocks.ReadHalf(w + DOffset), KQuantBlocks.ReadHalf(w + DMinOffset), Vector128.Sum(acc), minSum);
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
                Vector256<int> sumi = LevelSums(w, a, scaleBytes);
                acc = Fma.MultiplyAdd(scale, Avx.ConvertToVector256Single(sumi), acc);
            }
            return KQuantVector.HorizontalSum(acc) + KQuantVector.HorizontalSum(accMins);
        }
    }

    /// <summary>
    /// AVX-512: as <see cref="WithAvx2"/>, with the 64 values of a chunk in one 512-bit register (low nibbles in the
    /// low half, high nibbles in the high half), so each chunk is one vpmaddubsw and one vpmaddwd.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static float WithAvx512(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int blocks)
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
                Vector512<byte> scaleLanes = Vector512.Create(scaleBytes, scaleBytes);
                Vector512<int> sumi = (Chunk512(w, a, 0, scaleLanes) + Chunk512(w, a, 1, scaleLanes)) + (Chunk512(w, a, 2, scaleLanes) + Chunk512(w, a, 3, scaleLanes));
                acc = Fma.MultiplyAdd(scale, Avx.ConvertToVector256Single(Int8SimdWide.Fold(sumi)), acc);
            }
            return KQuantVector.HorizontalSum(acc) + KQuantVector.HorizontalSum(accMins);
        }
    }

    /// <summary>
    /// The float step of the scalar reference: <c>sum + (a·d·Σ sc·(q·x) − a·dmin·Σ m·(Σx))</c> from the super-block's
    /// exact integer sums, one super-block after another. The vector kernels (single-row and the prompt tiles) keep
    /// their float sums in vector lanes instead (a sequential step per super-block costs them a quarter to two fifths
    /// of their speed), so they agree with it to float rounding.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float AddSuperBlock(float sum, float ad, float d, float dmin, int levelSum, int minSum) =>
        sum + (ad * d * levelSum - ad * dmin * minSum);

    /// <summary>A super-block's Σ sc·q·x as eight int32 partial sums (AVX2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> LevelSums(byte* w, byte* a, Vector256<byte> scaleBytes) =>
        (Chunk(w, a, 0, scaleBytes) + Chunk(w, a, 1, scaleBytes)) + (Chunk(w, a, 2, scaleBytes) + Chunk(w, a, 3, scaleBytes));

    /// <summary><see cref="Chunk"/> in one 512-bit step: sixteen int32 partial sums of Σ sc·q·x over 64 values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Chunk512(byte* w, byte* a, [ConstantExpected(Min = 0, Max = 3)] int chunk, Vector512<byte> scaleLanes)
    {
        Vector256<byte> lowNibble = Vector256.Create((byte)0x0F);
        Vector256<byte> bits = Avx.LoadVector256(w + LevelsOffset + 32 * chunk);
        Vector512<byte> q = Vector512.Create(bits & lowNibble, Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & lowNibble);
        Vector512<short> p = Int8SimdWide.MultiplyAddAdjacent(q, Vector512.Load((sbyte*)(a + Q8KLayout.QuantsOffset + 64 * chunk)));
        Vector512<byte> pick = Vector512.Create(KQuantVector.ZeroExtendByteMask(2 * chunk), KQuantVector.ZeroExtendByteMask(2 * chunk + 1));
        return Int8SimdWide.MultiplyAddAdjacent(p, Int8SimdWide.ShuffleInLanes(scaleLanes, pick).AsInt16());
    }

    /// <summary>
    /// Σ sc·q·x of the 64 values of one qs chunk (sub-blocks 2c and 2c+1), as eight int32 partial sums.
    /// <paramref name="scaleBytes"/> holds the eight 6-bit scales as bytes (not int16) in both lanes
    /// (<see cref="KQuantVector.SubBlockScales"/>); one vpshufb zero-extends each.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Chunk(byte* w, byte* a, [ConstantExpected(Min = 0, Max = 3)] int chunk, Vector256<byte> scaleBytes)
    {
        Vector256<byte> lowNibble = Vector256.Create((byte)0x0F);
        Vector256<byte> bits = Avx.LoadVector256(w + LevelsOffset + 32 * chunk);
        sbyte* x = (sbyte*)(a + Q8KLayout.QuantsOffset + 64 * chunk);
        Vector256<short> pLow = Avx2.MultiplyAddAdjacent(bits & lowNibble, Avx.LoadVector256(x));
        Vector256<short> pHigh = Avx2.MultiplyAddAdjacent(Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & lowNibble, Avx.LoadVector256(x + 32));
        Vector256<short> scaleLow = Avx2.Shuffle(scaleBytes, KQuantVector.ZeroExtendByteMask(2 * chunk)).AsInt16();
        Vector256<short> scaleHigh = Avx2.Shuffle(scaleBytes, KQuantVector.ZeroExtendByteMask(2 * chunk + 1)).AsInt16();
        return Avx2.MultiplyAddAdjacent(pLow, scaleLow) + Avx2.MultiplyAddAdjacent(pHigh, scaleHigh);
    }
}
