using System.Runtime.CompilerServices;
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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

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
