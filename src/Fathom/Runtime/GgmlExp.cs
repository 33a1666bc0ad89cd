using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Fathom.Runtime;

/// <summary>
/// ggml's vectorized exponential (<c>ggml_v_expf</c>, the AVX2 + FMA form, after Arm's optimized routine: maximum
/// error 1.45 ulp + 0.5) and the SiLU built on it, lane for lane, so that SwiGLU and softmax produce ggml's floats.
/// ggml runs them on whole vectors of 8 and the scalar libm <c>expf</c> (.NET's <see cref="MathF.Exp"/> on Linux) on
/// a row's last few values; <see cref="SiluMul"/> does the same.
/// Written with the cross-platform Vector256 operations: on AVX2 + FMA each maps to the instruction ggml uses.
/// </summary>
internal static class GgmlExp
{
    private static readonly Vector256<float> Shifter = Vector256.Create(BitConverter.Int32BitsToSingle(0x4b400000)); // 1.5 · 2^23
    private static readonly Vector256<float> InvLn2 = Vector256.Create(BitConverter.Int32BitsToSingle(0x3fb8aa3b));
    private static readonly Vector256<float> Ln2High = Vector256.Create(BitConverter.Int32BitsToSingle(0x3f317200));
    private static readonly Vector256<float> Ln2Low = Vector256.Create(BitConverter.Int32BitsToSingle(0x35bfbe8e));
    private static readonly Vector256<float> C1 = Vector256.Create(BitConverter.Int32BitsToSingle(0x3f7ffff6));
    private static readonly Vector256<float> C2 = Vector256.Create(BitConverter.Int32BitsToSingle(0x3efffedb));
    private static readonly Vector256<float> C3 = Vector256.Create(BitConverter.Int32BitsToSingle(0x3e2aaf33));
    private static readonly Vector256<float> C4 = Vector256.Create(BitConverter.Int32BitsToSingle(0x3d2b9f17));
    private static readonly Vector256<float> C5 = Vector256.Create(BitConverter.Int32BitsToSingle(0x3c072010));

    /// <summary>e^x on 8 lanes, as ggml_v_expf computes it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        // x = n·ln2 + b with n = round(x / ln2) (the shifter rounds), ln2 split in two for an exact n·ln2.
        Vector256<float> z = Vector256.FusedMultiplyAdd(x, InvLn2, Shifter);
        Vector256<float> n = z - Shifter;
        Vector256<float> b = Vector256.FusedMultiplyAdd(-n, Ln2Low, Vector256.FusedMultiplyAdd(-n, Ln2High, x));
        Vector256<uint> e = z.AsUInt32() << 23;
        Vector256<float> k = (e + Vector256.Create(1f).AsUInt32()).AsSingle(); // 2^n
        Vector256<float> absN = Vector256.Abs(n);
        Vector256<float> c = Vector256.GreaterThan(absN, Vector256.Create(126f));
        Vector256<float> u = b * b;
        Vector256<float> j = Vector256.FusedMultiplyAdd(
            Vector256.FusedMultiplyAdd(Vector256.FusedMultiplyAdd(C5, b, C4), u, Vector256.FusedMultiplyAdd(C3, b, C2)),
            u, C1 * b); // e^b − 1
        if (c == Vector256<float>.Zero) return Vector256.FusedMultiplyAdd(j, k, k);
        // 2^n out of float range for k alone: scale in two steps, or saturate to 0 / infinity beyond |n| > 192.
        Vector256<uint> g = Vector256.LessThanOrEqual(n, Vector256<float>.Zero).AsUInt32() & Vector256.Create(0x82000000u);
        Vector256<float> s1 = (g + Vector256.Create(0x7f000000u)).AsSingle();
        Vector256<float> s2 = (e - g).AsSingle();
        Vector256<float> d = Vector256.GreaterThan(absN, Vector256.Create(192f));
        return Vector256.ConditionalSelect(d, s1 * s1,
            Vector256.ConditionalSelect(c, Vector256.FusedMultiplyAdd(s2, j, s2) * s1, Vector256.FusedMultiplyAdd(k, j, k)));
    }

    /// <summary>x / (1 + e^−x) on 8 lanes (ggml_v_silu).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Silu(Vector256<float> x) => x / (Vector256.Create(1f) + Exp(Vector256<float>.Zero - x));

    /// <summary>ggml_silu_f32, the scalar form for a row's last values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Silu(float x) => x / (1f + MathF.Exp(-x));

    /// <summary>
    /// <c>gate = silu(gate) · up</c> as ggml_vec_swiglu_f32: 8 values at a time through <see cref="Silu(Vector256{float})"/>,
    /// the last <c>Length % 8</c> through <see cref="Silu(float)"/>.
    /// </summary>
    public static void SiluMul(Span<float> gate, ReadOnlySpan<float> up)
    {
        int i = 0;
        for (; i + 8 <= gate.Length; i += 8)
        {
            Span<float> g = gate.Slice(i, 8);
            (Silu(Vector256.Create<float>(g)) * Vector256.Create(up.Slice(i, 8))).CopyTo(g);
        }
        for (; i < gate.Length; i++) gate[i] = Silu(gate[i]) * up[i];
    }
}
