using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats.LowBitIq;

/// <summary>
/// AVX2 dequantization of one 8-value run straight from a grid table row, with the same float operations (and so
/// the same bits) as the scalar reference: a zero/sign-extending byte load, an exact int→float conversion, then the
/// scalar code's one multiply (and, for IQ1, its one exact add).
/// </summary>
internal static unsafe class IqRunsAvx2
{
    /// <summary>IQ2: scale · grid, negated where the sign mask byte is 0xFF.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreSigned(float* y, ulong* gridRow, ulong* signMask, Vector256<float> scale)
    {
        Vector256<float> v = Avx.Multiply(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32((byte*)gridRow)), scale);
        Vector256<float> sign = Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((sbyte*)signMask), 31).AsSingle();
        Avx.Store(y, Avx.Xor(v, sign));
    }

    /// <summary>IQ1: scale · (grid + shift) for a ternary grid row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreShifted(float* y, ulong* gridRow, float shift, Vector256<float> scale)
    {
        Vector256<float> v = Avx.Add(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32((sbyte*)gridRow)), Vector256.Create(shift));
        Avx.Store(y, Avx.Multiply(scale, v));
    }
}
