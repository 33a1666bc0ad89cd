using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>How a half-precision format's values widen to floats: what <see cref="HalfGemm{T}"/> needs of F16 and BF16.</summary>
internal unsafe interface IHalfWidening
{
    /// <summary>Eight values (AVX2).</summary>
    static abstract Vector256<float> Widen(ushort* p);

    /// <summary>Eight values as two vectors of four (the portable path).</summary>
    static abstract (Vector128<float> Low, Vector128<float> High) WidenPortable(ushort* p);
}

/// <summary>
/// llamafile's tinyBLAS order over half-precision rows, which ggml's <c>MUL_MAT</c> uses for F16 and BF16 (docs/engine.md,
/// "Matching ggml's half-precision arithmetic"): one 8-lane fused multiply-add accumulator per output over steps of 8,
/// reduced by <see cref="HalfSums.Halves(Vector256{float})"/>. Rows must hold whole steps of 8. One body for both
/// formats; the JIT specializes it per <typeparamref name="T"/>.
/// </summary>
internal static unsafe class HalfGemm<T> where T : IHalfWidening
{
    /// <summary>One row's dot product (AVX2 + FMA).</summary>
    public static float Avx2(ushort* x, ushort* y, int n)
    {
        Vector256<float> acc = Vector256<float>.Zero;
        for (int i = 0; i < n; i += 8) acc = Fma.MultiplyAdd(T.Widen(x + i), T.Widen(y + i), acc);
        return HalfSums.Halves(acc);
    }

    /// <summary>The same sums with portable vectors: lanes 0–3 and 4–7 as two accumulators.</summary>
    public static float Portable(ushort* x, ushort* y, int n)
    {
        Vector128<float> low = Vector128<float>.Zero, high = low;
        for (int i = 0; i < n; i += 8)
        {
            (Vector128<float> xl, Vector128<float> xh) = T.WidenPortable(x + i);
            (Vector128<float> yl, Vector128<float> yh) = T.WidenPortable(y + i);
            low = Vector128.FusedMultiplyAdd(xl, yl, low);
            high = Vector128.FusedMultiplyAdd(xh, yh, high);
        }
        return HalfSums.Halves(low, high);
    }

    /// <summary>
    /// <paramref name="rows"/> rows against one activation row, four at a time (each row its own accumulator, so each
    /// value is <see cref="Avx2"/>'s): four independent chains keep the multiply-add unit busy where one would wait.
    /// </summary>
    public static void Rows(byte* weights, long weightRowBytes, int rows, ushort* activations, int n, float* output)
    {
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            var w0 = (ushort*)(weights + r * weightRowBytes);
            ushort* w1 = (ushort*)((byte*)w0 + weightRowBytes), w2 = (ushort*)((byte*)w1 + weightRowBytes), w3 = (ushort*)((byte*)w2 + weightRowBytes);
            Vector256<float> c0 = Vector256<float>.Zero, c1 = c0, c2 = c0, c3 = c0;
            for (int i = 0; i < n; i += 8)
            {
                Vector256<float> x = T.Widen(activations + i);
                c0 = Fma.MultiplyAdd(T.Widen(w0 + i), x, c0);
                c1 = Fma.MultiplyAdd(T.Widen(w1 + i), x, c1);
                c2 = Fma.MultiplyAdd(T.Widen(w2 + i), x, c2);
                c3 = Fma.MultiplyAdd(T.Widen(w3 + i), x, c3);
            }
            output[r] = HalfSums.Halves(c0);
            output[r + 1] = HalfSums.Halves(c1);
            output[r + 2] = HalfSums.Halves(c2);
            output[r + 3] = HalfSums.Halves(c3);
        }
        for (; r < rows; r++) output[r] = Avx2((ushort*)(weights + r * weightRowBytes), activations, n);
    }
}
