using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

// Shift counts and shuffle masks here are built from [ConstantExpected] arguments that are literals at every
// call site once the helpers are inlined; the analyzer cannot see through the arithmetic on them.
#pragma warning disable CA1857

namespace Fathom.Quants.Formats;

/// <summary>Small vector building blocks of the K-quant dot kernels.</summary>
internal static class KQuantVector
{
    /// <summary>
    /// Portable (Vector128 only) products of 16 unsigned levels (at most 127) with 16 int8 activations, folded
    /// into four int32 partial sums. The int16 pair sums stay below 2·127·128, so nothing saturates.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> DotU8I8(Vector128<byte> levels, Vector128<sbyte> activations)
    {
        (Vector128<ushort> l0, Vector128<ushort> l1) = Vector128.Widen(levels);
        (Vector128<short> a0, Vector128<short> a1) = Vector128.Widen(activations);
        Vector128<short> pairs = l0.AsInt16() * a0 + l1.AsInt16() * a1;
        (Vector128<int> p0, Vector128<int> p1) = Vector128.Widen(pairs);
        return p0 + p1;
    }

    /// <summary>Bytes ahead of the current weight block that the kernels prefetch.</summary>
    public const int PrefetchDistance = 768;

    /// <summary>
    /// Prefetches the cache lines of the weight block <see cref="PrefetchDistance"/> bytes ahead. Weight rows
    /// stream from memory once per token; hinting them ahead keeps the loads off the critical path when the
    /// hardware prefetcher lags, which mattered most for Q2_K (the least work per byte) on rows beyond the caches.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void PrefetchAhead(byte* block, int blockBytes)
    {
        // One hint per 64 bytes of stream; blockBytes is a constant at every call, so the conditions fold away.
        byte* ahead = block + PrefetchDistance;
        Sse.Prefetch0(ahead);
        if (blockBytes > 64) Sse.Prefetch0(ahead + 64);
        if (blockBytes > 128) Sse.Prefetch0(ahead + 128);
        if (blockBytes > 192) Sse.Prefetch0(ahead + 192);
    }

    /// <summary>
    /// Byte shuffle that puts byte <paramref name="k"/> of each lane, zero-extended, into every int16 of the lane
    /// (control 0x80 zeroes the high bytes; constant for constant k): unsigned byte scales become int16 scales in
    /// one vpshufb, with no widening step.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> ZeroExtendByteMask([ConstantExpected(Min = 0, Max = 15)] int k) => Vector256.Create((ushort)(0x8000 | k)).AsByte();

    /// <summary>
    /// Bit <paramref name="from"/> of every byte moved to bit <paramref name="to"/>, other bits cleared. The shifts act
    /// on 16-bit lanes, but the bit is masked first so it never crosses into the neighbouring byte.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> MoveBit(Vector256<byte> v, [ConstantExpected(Min = 0, Max = 7)] int from, [ConstantExpected(Min = 0, Max = 7)] int to)
    {
        Vector256<ushort> bit = (v & Vector256.Create((byte)(1 << from))).AsUInt16();
        if (from > to) bit = Avx2.ShiftRightLogical(bit, (byte)(from - to));
        else if (from < to) bit = Avx2.ShiftLeftLogical(bit, (byte)(to - from));
        return bit.AsByte();
    }

    /// <summary>
    /// The per-super-block work Q4_K and Q5_K share: unpacks the eight 6-bit (scale, min) pairs, adds
    /// −dmin·a·Σ m_j·(Σx)_j (<paramref name="minScale"/> = dmin·a in every lane) to <paramref name="accMins"/>, and
    /// returns the eight 6-bit scales as bytes repeated in both lanes, for <see cref="ZeroExtendByteMask"/> shuffles.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector256<byte> SubBlockScales(byte* scaleField, byte* activationBlock, Vector128<float> minScale, ref Vector128<float> accMins)
    {
        KQuantScales.UnpackScaleMins(scaleField, out ulong scales, out ulong mins);
        Vector128<short> mins16 = Sse41.ConvertToVector128Int16(Vector128.CreateScalar(mins).AsByte());
        Vector128<int> minProducts = Sse2.MultiplyAddAdjacent(mins16, Q8KPairSums(activationBlock));
        accMins = Fma.MultiplyAddNegated(minScale, Sse2.ConvertToVector128Single(minProducts), accMins);
        Vector128<byte> scales8 = Vector128.CreateScalar(scales).AsByte();
        return Vector256.Create(scales8, scales8);
    }

    /// <summary>Sum of the four lanes of an SSE float accumulator.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HorizontalSum(Vector128<float> v)
    {
        v += Sse.MoveHighToLow(v, v);
        v += Sse.Shuffle(v, v, 1);
        return v.ToScalar();
    }

    /// <summary>Sum of the eight lanes of an AVX float accumulator.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HorizontalSum(Vector256<float> v)
    {
        return HorizontalSum(v.GetLower() + v.GetUpper());
    }

    /// <summary>Sums of adjacent pairs of the sixteen int16 group sums of a Q8_K block: the sums of its eight 32-value groups.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector128<short> Q8KPairSums(byte* activationBlock)
    {
        var sums = (short*)(activationBlock + Q8KLayout.SumsOffset);
        return Ssse3.HorizontalAdd(Sse2.LoadVector128(sums), Sse2.LoadVector128(sums + 8));
    }

    /// <summary>
    /// For formats with sixteen 16-value groups: the int16 scales of groups 8h … 8h+7 (<paramref name="half"/> = h)
    /// repeated in both 128-bit lanes, ready for <see cref="PickGroupScales"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<short> GroupScalesHalf(Vector256<short> allScales, [ConstantExpected(Min = 0, Max = 1)] int half) =>
        half == 0 ? Avx2.Permute2x128(allScales, allScales, 0x00) : Avx2.Permute2x128(allScales, allScales, 0x11);

    /// <summary>
    /// Scales for the 32 values of one 2-group slice: lane 0 (values 0–15) gets group 2k, lane 1 (values 16–31)
    /// group 2k+1, each broadcast to every int16 of its lane.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<short> PickGroupScales(Vector256<short> scalesHalf, [ConstantExpected(Min = 0, Max = 3)] int k)
    {
        // Byte pairs (4k, 4k+1) in lane 0 and (4k+2, 4k+3) in lane 1 select int16 scale 2k and 2k+1 of that lane.
        Vector256<short> mask = Vector256.Create(Vector128.Create((short)(0x0100 + 0x0404 * k)), Vector128.Create((short)(0x0302 + 0x0404 * k)));
        return Avx2.Shuffle(scalesHalf.AsByte(), mask.AsByte()).AsInt16();
    }

    /// <summary>The sixteen int16 group sums of a Q8_K block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector256<short> Q8KGroupSums(byte* activationBlock) =>
        Avx.LoadVector256((short*)(activationBlock + Q8KLayout.SumsOffset));
}
