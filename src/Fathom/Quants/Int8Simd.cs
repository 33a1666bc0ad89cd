using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants;

/// <summary>SIMD pieces of the integer dot products: int8 products and pair sums, bit-to-byte expansion, int8 → float stores.</summary>
internal static class Int8Simd
{
    /// <summary>
    /// Sums of x·y over each group of four bytes (vpmaddubsw then vpmaddwd). vpmaddubsw wants one unsigned operand,
    /// so |x| takes x's place and x's sign moves onto y. Exact while y ∈ [−127, 127] (every activation quantizer's
    /// range), since then no int16 pair sum saturates.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotQuadsAvx2(Vector256<sbyte> x, Vector256<sbyte> y) =>
        Avx2.MultiplyAddAdjacent(PairProductsAvx2(x, y), Vector256<short>.One);

    /// <summary>
    /// Adjacent-pair sums of x·y for signed x, y as 16 int16 lanes (vpmaddubsw of |x| and y carrying x's sign, as in
    /// <see cref="DotQuadsAvx2"/>). Each sum stays below 2·127·128 while y ∈ [−127, 127], clear of saturation.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<short> PairProductsAvx2(Vector256<sbyte> x, Vector256<sbyte> y) =>
        Avx2.MultiplyAddAdjacent(Avx2.Abs(x), Avx2.Sign(y, x));

    /// <summary>Sums of x·y over groups of four bytes for an unsigned x ∈ [0, 127] (no sign trick needed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotQuadsUnsignedAvx2(Vector256<byte> x, Vector256<sbyte> y)
    {
        Vector256<short> pairs = Avx2.MultiplyAddAdjacent(x, y);
        return Avx2.MultiplyAddAdjacent(pairs, Vector256<short>.One);
    }

    /// <summary>Four int32 partial sums of 16 int8 products, through widening only (Vector128, any ISA). Exact.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> DotPortable(Vector128<sbyte> x, Vector128<sbyte> y)
    {
        (Vector128<short> xl, Vector128<short> xh) = Vector128.Widen(x);
        (Vector128<short> yl, Vector128<short> yh) = Vector128.Widen(y);
        // |int8·int8| ≤ 16384 fits int16; pair sums might not, so widen before adding.
        (Vector128<int> a, Vector128<int> b) = Vector128.Widen(xl * yl);
        (Vector128<int> c, Vector128<int> d) = Vector128.Widen(xh * yh);
        return (a + b) + (c + d);
    }

    /// <summary>Four int32 partial sums of 16 products u·y for unsigned u ≤ 255 (each product fits int16: 255·128). Exact.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> DotPortable(Vector128<byte> u, Vector128<sbyte> y)
    {
        (Vector128<ushort> uLo, Vector128<ushort> uHi) = Vector128.Widen(u);
        (Vector128<short> yLo, Vector128<short> yHi) = Vector128.Widen(y);
        (Vector128<int> a, Vector128<int> b) = Vector128.Widen(uLo.AsInt16() * yLo);
        (Vector128<int> c, Vector128<int> d) = Vector128.Widen(uHi.AsInt16() * yHi);
        return (a + b) + (c + d);
    }

    /// <summary>Byte j of the result is 0xFF where bit j of <paramref name="bits"/> is set, else 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> BitsToBytesAvx2(uint bits)
    {
        // Spread byte k of the word over result bytes 8k..8k+7, then test one bit per byte.
        Vector256<byte> spread = Avx2.Shuffle(Vector256.Create(bits).AsByte(),
            Vector256.Create(0x0000000000000000UL, 0x0101010101010101UL, 0x0202020202020202UL, 0x0303030303030303UL).AsByte());
        Vector256<byte> mask = Vector256.Create(0x8040201008040201UL).AsByte();
        return Vector256.Equals(spread & mask, mask);
    }

    /// <summary>
    /// <see cref="BitsToBytesAvx2(uint)"/> of the 32-bit word at <paramref name="bits"/>, broadcast straight from memory
    /// (one vpbroadcastd instead of a scalar load, vmovd and a register broadcast).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector256<byte> BitsToBytesAvx2(uint* bits)
    {
        Vector256<byte> spread = Avx2.Shuffle(Avx2.BroadcastScalarToVector256(bits).AsByte(),
            Vector256.Create(0x0000000000000000UL, 0x0101010101010101UL, 0x0202020202020202UL, 0x0303030303030303UL).AsByte());
        Vector256<byte> mask = Vector256.Create(0x8040201008040201UL).AsByte();
        return Vector256.Equals(spread & mask, mask);
    }

    /// <inheritdoc cref="BitsToBytesAvx2(uint)"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<byte> BitsToBytes(uint bits16)
    {
        Vector128<byte> spread = Vector128.Shuffle(Vector128.Create(bits16).AsByte(),
            Vector128.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
        Vector128<byte> mask = Vector128.Create(0x8040201008040201UL).AsByte();
        return Vector128.Equals(spread & mask, mask);
    }

    /// <summary>Stores d·q + m for 16 int8 values q (multiply, then add: the rounding of ggml's scalar decoders).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void ScaleStore(Vector128<sbyte> q, Vector128<float> d, Vector128<float> m, float* destination)
    {
        (Vector128<short> lo, Vector128<short> hi) = Vector128.Widen(q);
        (Vector128<int> a, Vector128<int> b) = Vector128.Widen(lo);
        (Vector128<int> c, Vector128<int> e) = Vector128.Widen(hi);
        (Vector128.ConvertToSingle(a) * d + m).Store(destination);
        (Vector128.ConvertToSingle(b) * d + m).Store(destination + 4);
        (Vector128.ConvertToSingle(c) * d + m).Store(destination + 8);
        (Vector128.ConvertToSingle(e) * d + m).Store(destination + 12);
    }

    /// <summary>Stores d·q for 16 int8 values q.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void ScaleStore(Vector128<sbyte> q, Vector128<float> d, float* destination)
    {
        (Vector128<short> lo, Vector128<short> hi) = Vector128.Widen(q);
        (Vector128<int> a, Vector128<int> b) = Vector128.Widen(lo);
        (Vector128<int> c, Vector128<int> e) = Vector128.Widen(hi);
        (Vector128.ConvertToSingle(a) * d).Store(destination);
        (Vector128.ConvertToSingle(b) * d).Store(destination + 4);
        (Vector128.ConvertToSingle(c) * d).Store(destination + 8);
        (Vector128.ConvertToSingle(e) * d).Store(destination + 12);
    }
}
