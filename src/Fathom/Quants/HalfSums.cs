using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Fathom.Quants;

/// <summary>
/// The horizontal sums of ggml's AVX2 kernels, lane for lane, so a dot product reduced here has ggml's bits
/// (<see cref="DotOrder"/>). An 8-lane accumulator is an AVX register or, on the portable path, a pair of
/// 4-lane halves (lanes 0–3, 4–7) that take exactly the same additions.
/// </summary>
internal static class HalfSums
{
    /// <summary>tinyBLAS's <c>hsum</c>: h = low half + high half, then (h0 + h2) + (h1 + h3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Halves(Vector256<float> x) => Halves(x.GetLower(), x.GetUpper());

    /// <inheritdoc cref="Halves(Vector256{float})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Halves(Vector128<float> low, Vector128<float> high)
    {
        Vector128<float> h = high + low;
        return (h.GetElement(0) + h.GetElement(2)) + (h.GetElement(1) + h.GetElement(3));
    }

    /// <summary>
    /// GGML_F32x8_REDUCE of four accumulators: (a0 + a2) + (a1 + a3), then h = low half + high half, then two
    /// horizontal adds: (h0 + h1) + (h2 + h3).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Reduce4(Vector256<float> a0, Vector256<float> a1, Vector256<float> a2, Vector256<float> a3)
    {
        Vector256<float> s = (a0 + a2) + (a1 + a3);
        return Pairs(s.GetLower(), s.GetUpper());
    }

    /// <inheritdoc cref="Reduce4(Vector256{float}, Vector256{float}, Vector256{float}, Vector256{float})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Pairs(Vector128<float> low, Vector128<float> high)
    {
        Vector128<float> h = low + high;
        return (h.GetElement(0) + h.GetElement(1)) + (h.GetElement(2) + h.GetElement(3));
    }
}
