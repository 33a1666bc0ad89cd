using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// What the shared half-precision kernels (<see cref="HalfGemm{T}"/>, <see cref="HalfDot{T}"/>) need of F16 and BF16:
/// how values widen to floats, and the format's own ggml_vec_dot order.
/// </summary>
internal unsafe interface IHalfPrecision
{
    /// <summary>One value.</summary>
    static abstract float ToSingle(ushort value);

    /// <summary>Eight values (AVX2).</summary>
    static abstract Vector256<float> Widen(ushort* p);

    /// <summary>Eight values as two vectors of four (the portable path).</summary>
    static abstract (Vector128<float> Low, Vector128<float> High) WidenPortable(ushort* p);

    /// <summary>ggml_vec_dot for this format (AVX2 build): whole steps reduced, the rest through <see cref="HalfDot{T}.Tail"/>.</summary>
    static abstract float VecDotAvx2(ushort* x, ushort* y, int n);

    /// <summary><see cref="VecDotAvx2"/>'s sums with portable vectors.</summary>
    static abstract float VecDotPortable(ushort* x, ushort* y, int n);
}

/// <summary>
/// The dot products of a half-precision format in one body for F16 and BF16: the scalar reference (double sums, as
/// ggml's scalar vec_dot), and the choice between tinyBLAS's order (<see cref="HalfGemm{T}"/>) and the format's
/// vec_dot order (<see cref="DotOrder"/>).
/// </summary>
internal static unsafe class HalfDot<T> where T : IHalfPrecision
{
    public static float Dot(KernelPath resolved, DotOrder order, ushort* w, ushort* a, int n)
    {
        if (resolved == KernelPath.Scalar) return Scalar(w, a, n);
        bool avx2 = resolved == KernelPath.Avx2;
        // tinyBLAS takes only rows of whole 8-value steps; ggml multiplies the others with vec_dot.
        return order == DotOrder.LlamafileGemm && n % 8 == 0
            ? (avx2 ? HalfGemm<T>.Avx2(w, a, n) : HalfGemm<T>.Portable(w, a, n))
            : (avx2 ? T.VecDotAvx2(w, a, n) : T.VecDotPortable(w, a, n));
    }

    /// <summary>
    /// Four rows at a time in tinyBLAS's order (each row its own accumulator, so each value is the one-row dot's);
    /// false when that order does not apply (another order, partial steps, no AVX2): the caller then dots row by row.
    /// </summary>
    public static bool TryRows(KernelPath best, DotOrder order, byte* weights, long weightRowBytes, int rows, byte* activations, int n, float* output)
    {
        if (order != DotOrder.LlamafileGemm || n % 8 != 0 || best != KernelPath.Avx2) return false;
        HalfGemm<T>.Rows(weights, weightRowBytes, rows, (ushort*)activations, n, output);
        return true;
    }

    /// <summary>Accumulates in double, as ggml's scalar vec_dot does: the reference the vector paths are held to.</summary>
    public static float Scalar(ushort* x, ushort* y, int n)
    {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += (double)T.ToSingle(x[i]) * T.ToSingle(y[i]);
        return (float)sum;
    }

    /// <summary>ggml adds the products past the last whole step to the reduced sum in double (each product is exact in float).</summary>
    public static float Tail(ushort* x, ushort* y, int i, int n, float reduced)
    {
        double sum = reduced;
        for (; i < n; i++) sum += T.ToSingle(x[i]) * T.ToSingle(y[i]);
        return (float)sum;
    }
}

/// <summary>
/// llamafile's tinyBLAS order over half-precision rows, which ggml's <c>MUL_MAT</c> uses for F16 and BF16 (docs/engine.md,
/// "Matching ggml's half-precision arithmetic"): one 8-lane fused multiply-add accumulator per output over steps of 8,
/// reduced by <see cref="HalfSums.Halves(Vector256{float})"/>. Rows must hold whole steps of 8. One body for both
/// formats; the JIT specializes it per <typeparamref name="T"/>.
/// </summary>
internal static unsafe class HalfGemm<T> where T : IHalfPrecision
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
