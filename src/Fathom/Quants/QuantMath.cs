using System.Runtime.CompilerServices;

namespace Fathom.Quants;

/// <summary>
/// Scalar building blocks of ggml's quantizers (ggml-quants.c), written so that Fathom's encoders make the same
/// choices as ggml's: the same rounding, the same scale searches, the same tie-breaking.
/// </summary>
public static class QuantMath
{
    /// <summary>Values whose magnitude is below this count as an all-zero group (ggml's GROUP_MAX_EPS).</summary>
    public const float GroupMaxEpsilon = 1e-15f;

    /// <summary>
    /// Round to nearest, ties to even, the way ggml's <c>nearest_int</c> does it: adding 1.5·2²³ makes the FPU round
    /// away the fraction, and the integer sits in the low mantissa bits. Valid for |value| ≤ 2²².
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int NearestInt(float value)
    {
        float shifted = value + 12582912f;
        int bits = BitConverter.SingleToInt32Bits(shifted);
        return (bits & 0x007fffff) - 0x00400000;
    }

    /// <summary>
    /// Round to nearest, ties to even, with no range limit (<see cref="NearestInt"/>'s bit trick is only valid for
    /// |value| ≤ 2²²): what the IQ and ternary quantizers use.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int RoundHalfToEven(float value) => (int)MathF.Round(value);

    /// <summary>
    /// Symmetric quantization of a group to levels −nmax..nmax−1 (stored as 0..2·nmax−1) with a search over 19 trial
    /// scales for the one that minimizes the weighted squared error; ggml's <c>make_qx_quants</c>.
    /// </summary>
    /// <param name="nmax">Half the number of levels (8 for 4 bits, 16 for 5 bits).</param>
    /// <param name="rmseType">0: no search; 1: weights x² (or <paramref name="weights"/>); 2: weights 1; 3: |x|; 4: √|x|.
    /// A negative value stops after the first estimate, as ggml does.</param>
    /// <returns>The scale: the group decodes as scale·(level − nmax).</returns>
    public static float MakeQxQuants(int nmax, ReadOnlySpan<float> x, Span<byte> levels, int rmseType, ReadOnlySpan<float> weights)
    {
        int n = x.Length;
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < GroupMaxEpsilon)
        {
            levels[..n].Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        if (rmseType == 0)
        {
            for (int i = 0; i < n; i++)
                levels[i] = (byte)(nmax + Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
            return 1 / iscale;
        }
        bool returnEarly = rmseType < 0;
        if (returnEarly) rmseType = -rmseType;

        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
            levels[i] = (byte)(l + nmax);
            float w = Weight(x[i], i, rmseType, weights);
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0f;
        if (returnEarly) return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;

        float best = scale * sumlx;
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            iscale = -(nmax + 0.1f * step) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
                float w = Weight(x[i], i, rmseType, weights);
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            // Keep the trial scale when it explains more of the signal: sumlx²/suml2 > best.
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++)
                    levels[i] = (byte)(nmax + Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    private static float Weight(float x, int i, int rmseType, ReadOnlySpan<float> weights) =>
        !weights.IsEmpty ? weights[i]
        : rmseType switch { 1 => x * x, 2 => 1f, 3 => MathF.Abs(x), _ => MathF.Sqrt(MathF.Abs(x)) };

    /// <summary>Mean of x² over a whole row: ggml's σ² that mixes into importance weights (w = imp·√(σ² + x²)).</summary>
    public static float MeanSquare(ReadOnlySpan<float> row)
    {
        float sum = 0;
        for (int i = 0; i < row.Length; i++) sum += row[i] * row[i];
        return sum / row.Length;
    }
}
