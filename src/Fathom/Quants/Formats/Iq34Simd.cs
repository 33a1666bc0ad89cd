using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>Signed 8-bit products for the Portable (Vector128-only) kernels; compiles and runs on ARM64 as on x86.</summary>
internal static class PortableInt8
{
    /// <summary>Sums of a[i]·b[i] in four int lanes. Each 16-bit pair sum fits: |a|,|b| ≤ 128 gives ≤ 2·16384.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Dot(Vector128<sbyte> a, Vector128<sbyte> b)
    {
        (Vector128<short> aLo, Vector128<short> aHi) = Vector128.Widen(a);
        (Vector128<short> bLo, Vector128<short> bHi) = Vector128.Widen(b);
        Vector128<short> p = aLo * bLo;
        Vector128<short> q = aHi * bHi;
        (Vector128<int> p0, Vector128<int> p1) = Vector128.Widen(p);
        (Vector128<int> q0, Vector128<int> q1) = Vector128.Widen(q);
        return (p0 + p1) + (q0 + q1);
    }

    /// <summary>Sums of u[i]·b[i] for unsigned u ≤ 255 in four int lanes (each product fits a short: 255·128).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Dot(Vector128<byte> u, Vector128<sbyte> b)
    {
        (Vector128<ushort> uLo, Vector128<ushort> uHi) = Vector128.Widen(u);
        (Vector128<short> bLo, Vector128<short> bHi) = Vector128.Widen(b);
        Vector128<short> p = uLo.AsInt16() * bLo;
        Vector128<short> q = uHi.AsInt16() * bHi;
        (Vector128<int> p0, Vector128<int> p1) = Vector128.Widen(p);
        (Vector128<int> q0, Vector128<int> q1) = Vector128.Widen(q);
        return (p0 + p1) + (q0 + q1);
    }
}

/// <summary>AVX2 8-bit product helpers (vpmaddubsw with the sign trick).</summary>
internal static class Avx2Int8
{
    /// <summary>
    /// Adjacent-pair sums of x[i]·y[i] for signed x, y as 16 shorts: vpmaddubsw needs an unsigned operand, so
    /// it multiplies |x| by y carrying x's sign. Sums stay below 2·127·128, clear of saturation.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<short> Products(Vector256<sbyte> x, Vector256<sbyte> y) =>
        Avx2.MultiplyAddAdjacent(Avx2.Sign(x, x).AsByte(), Avx2.Sign(y, x));
}
