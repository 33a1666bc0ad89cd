using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Fathom.Quants;

/// <summary>
/// IEEE binary16 conversions for block scales and F16 rows. Scalar conversions go through <see cref="Half"/>
/// (exact widening; narrowing rounds to nearest even, as ggml's F16C and software paths do).
/// </summary>
public static class Fp16
{
    /// <summary>2¹¹²: moves a binary16 exponent (bias 15) to a binary32 exponent (bias 127).</summary>
    private const float ExponentRebias = 5.192296858534828e33f;

    /// <summary>
    /// Exact widening, without the branches of the <see cref="Half"/> conversion (block scales are converted in every
    /// dot-product step): shift exponent and mantissa into place and rebias; only zero/subnormal and Inf/NaN inputs,
    /// rare in scales, take a branch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort bits)
    {
        const uint ShiftedExponent = 0x7c00u << 13;
        uint u = (bits & 0x7fffu) << 13;
        uint exponent = u & ShiftedExponent;
        u += (127 - 15) << 23;
        if (exponent == ShiftedExponent)
        {
            u += (128 - 16) << 23; // Inf/NaN: all-ones exponent, mantissa kept
        }
        else if (exponent == 0)
        {
            // Zero or subnormal: build 2⁻¹⁴·(1 + m) and subtract the implicit 2⁻¹⁴, all in exact arithmetic.
            u += 1 << 23;
            u = BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(u) - 6.103515625e-05f);
        }
        return BitConverter.UInt32BitsToSingle(u | ((uint)(bits & 0x8000) << 16));
    }

    /// <summary>
    /// All 65 536 widenings of <see cref="ToSingle"/> (256 KiB, 64-byte aligned, built once), for the per-block scales
    /// of the dot kernels: one load beats the bit manipulation there, and real scales span few exponents, so few cache
    /// lines of the table stay hot. A native pointer so AVX2 kernels can broadcast straight from it and the JIT can
    /// fold the address.
    /// </summary>
    internal static readonly unsafe float* Table = BuildTable();

    private static unsafe float* BuildTable()
    {
        var table = (float*)NativeMemory.AlignedAlloc(65536 * sizeof(float), 64);
        for (int i = 0; i <= ushort.MaxValue; i++) table[i] = ToSingle((ushort)i);
        return table;
    }

    /// <summary>Table lookup of <see cref="ToSingle"/>, bit-identical.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe float Lookup(ushort bits) => Table[bits];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromSingle(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>
    /// Widens four binary16 bit patterns (the low 16 bits of each lane) to floats without F16C, exactly: the
    /// exponent and mantissa are shifted into place and rebiased by one multiplication, which also turns
    /// subnormal halves into the right normal floats; infinities and NaNs get the all-ones exponent instead.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Widen(Vector128<uint> bits)
    {
        Vector128<uint> sign = (bits & Vector128.Create(0x8000u)) << 16;
        Vector128<uint> magnitude = bits & Vector128.Create(0x7fffu);
        Vector128<uint> shifted = magnitude << 13;
        Vector128<float> finite = shifted.AsSingle() * Vector128.Create(ExponentRebias);
        Vector128<float> special = (shifted | Vector128.Create(0x7f800000u)).AsSingle();
        Vector128<float> isSpecial = Vector128.GreaterThanOrEqual(magnitude, Vector128.Create(0x7c00u)).AsSingle();
        return Vector128.ConditionalSelect(isSpecial, special, finite) | sign.AsSingle();
    }

    /// <inheritdoc cref="Widen(Vector128{uint})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector256<uint> bits)
    {
        Vector256<uint> sign = (bits & Vector256.Create(0x8000u)) << 16;
        Vector256<uint> magnitude = bits & Vector256.Create(0x7fffu);
        Vector256<uint> shifted = magnitude << 13;
        Vector256<float> finite = shifted.AsSingle() * Vector256.Create(ExponentRebias);
        Vector256<float> special = (shifted | Vector256.Create(0x7f800000u)).AsSingle();
        Vector256<float> isSpecial = Vector256.GreaterThanOrEqual(magnitude, Vector256.Create(0x7c00u)).AsSingle();
        return Vector256.ConditionalSelect(isSpecial, special, finite) | sign.AsSingle();
    }
}
