using System.Runtime.CompilerServices;

namespace Fathom.Quants.Formats;

/// <summary>
/// The scale searches the K-quant encoders share (ggml's make_qx_quants, make_q3_quants, make_qkx2/qkx3_quants
/// and make_qp_quants): each picks a scale (and for affine formats a minimum) for a small group of values so that
/// the weighted squared (or absolute) error of the rounded levels is small, by trying a fan of candidate scales
/// and refitting the best by least squares.
/// </summary>
internal static class KQuantSearch
{
    /// <summary>
    /// Symmetric levels in [-nmax, nmax-1] with the scale's sign chosen so the largest magnitude maps to -nmax
    /// (make_qx_quants, rmse_type 1). Weights are <paramref name="weights"/> or, when empty, x². Writes levels
    /// biased by +nmax and returns the scale.
    /// </summary>
    public static float Symmetric(ReadOnlySpan<float> x, int nmax, Span<sbyte> levels, ReadOnlySpan<float> weights)
    {
        int n = x.Length;
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < KQuantBlocks.GroupMaxEps)
        {
            levels[..n].Clear();
            return 0f;
        }
        bool weighted = !weights.IsEmpty;
        float iscale = -nmax / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = Math.Clamp(QuantMath.NearestInt(iscale * x[i]), -nmax, nmax - 1);
            levels[i] = (sbyte)(l + nmax);
            float w = weighted ? weights[i] : x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0f;
        float best = scale * sumlx;
        // Try scales that map the extreme value slightly inside or outside the grid; keep the best least-squares fit.
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            iscale = -(nmax + 0.1f * step) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Clamp(QuantMath.NearestInt(iscale * x[i]), -nmax, nmax - 1);
                float w = weighted ? weights[i] : x[i] * x[i];
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++)
                    levels[i] = (sbyte)(nmax + Math.Clamp(QuantMath.NearestInt(iscale * x[i]), -nmax, nmax - 1));
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    /// <summary>
    /// Symmetric levels in [-nmax, nmax-1] weighted by x², refined by moving single levels while the x²-weighted
    /// fit improves (make_q3_quants with rmse). Writes levels biased by +nmax and returns the scale.
    /// </summary>
    public static float SymmetricRefined(ReadOnlySpan<float> x, int nmax, Span<sbyte> levels)
    {
        int n = x.Length;
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < KQuantBlocks.GroupMaxEps)
        {
            levels[..n].Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = Math.Clamp(QuantMath.NearestInt(iscale * x[i]), -nmax, nmax - 1);
            levels[i] = (sbyte)l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        for (int pass = 0; pass < 5; pass++)
        {
            int changed = 0;
            for (int i = 0; i < n; i++)
            {
                float w = x[i] * x[i];
                float slx = sumlx - w * x[i] * levels[i];
                if (slx <= 0) continue;
                float sl2 = suml2 - w * levels[i] * levels[i];
                int l = Math.Clamp(QuantMath.NearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (l == levels[i]) continue;
                slx += w * x[i] * l;
                sl2 += w * l * l;
                if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2)
                {
                    levels[i] = (sbyte)l;
                    sumlx = slx;
                    suml2 = sl2;
                    changed++;
                }
            }
            if (changed == 0) break;
        }
        for (int i = 0; i < n; i++) levels[i] += (sbyte)nmax;
        return suml2 > 0 ? sumlx / suml2 : 0f;
    }

    /// <summary>
    /// Affine levels in [0, nmax] for x ≈ scale·l − min with min ≥ 0 (make_qkx2/qkx3_quants): starts from the
    /// min/max grid, then tries iscales (rmin + rdelta·k + nmax)/(max − min) for k = 0..steps, each refitted by
    /// weighted least squares on (scale, min), keeping the lowest weighted squared (or absolute) error.
    /// Weights are <paramref name="weights"/> or, when empty, x². Returns the scale; <paramref name="min"/> is
    /// the positive offset that is subtracted.
    /// </summary>
    public static float Affine(ReadOnlySpan<float> x, int nmax, ReadOnlySpan<float> weights, Span<byte> levels, Span<byte> scratch,
        out float min, float rmin, float rdelta, int steps, bool absoluteError)
    {
        int n = x.Length;
        bool weighted = !weights.IsEmpty;
        float lo = x[0], hi = x[0];
        float sumW = weighted ? weights[0] : x[0] * x[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < lo) lo = x[i];
            if (x[i] > hi) hi = x[i];
            float w = weighted ? weights[i] : x[i] * x[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (lo > 0) lo = 0;
        if (hi <= lo)
        {
            levels[..n].Clear();
            min = -lo;
            return 0f;
        }
        float iscale = nmax / (hi - lo);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = Math.Clamp(QuantMath.NearestInt(iscale * (x[i] - lo)), 0, nmax);
            levels[i] = (byte)l;
            float diff = scale * l + lo - x[i];
            float w = weighted ? weights[i] : x[i] * x[i];
            bestError += w * (absoluteError ? MathF.Abs(diff) : diff * diff);
        }
        for (int step = 0; step <= steps; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (hi - lo);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                // lo is the fitted offset so far and may sit near hi, so guard the product before rounding.
                float v = iscale * (x[i] - lo);
                int l = v > 0 ? QuantMath.NearestInt(MathF.Min(v, nmax)) : 0;
                scratch[i] = (byte)l;
                float w = weighted ? weights[i] : x[i] * x[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }
            float det = sumW * sumL2 - sumL * sumL;
            if (!(det > 0)) continue;
            float fitScale = (sumW * sumXL - sumX * sumL) / det;
            float fitMin = (sumL2 * sumX - sumL * sumXL) / det;
            if (fitMin > 0)
            {
                fitMin = 0;
                fitScale = sumXL / sumL2;
            }
            float error = 0;
            for (int i = 0; i < n; i++)
            {
                float diff = fitScale * scratch[i] + fitMin - x[i];
                float w = weighted ? weights[i] : x[i] * x[i];
                error += w * (absoluteError ? MathF.Abs(diff) : diff * diff);
            }
            if (error < bestError)
            {
                scratch[..n].CopyTo(levels);
                bestError = error;
                scale = fitScale;
                lo = fitMin;
            }
        }
        min = -lo;
        return scale;
    }

    /// <summary>
    /// Non-negative levels in [0, nmax] for non-negative x (make_qp_quants): the super-block scale of sub-block
    /// scales or mins, weighted by <paramref name="weights"/>, with a scale fan and level-by-level refinement.
    /// </summary>
    public static float Positive(ReadOnlySpan<float> x, int nmax, Span<byte> levels, ReadOnlySpan<float> weights)
    {
        int n = x.Length;
        float max = 0;
        for (int i = 0; i < n; i++) max = MathF.Max(max, x[i]);
        if (max < KQuantBlocks.GroupMaxEps)
        {
            levels[..n].Clear();
            return 0f;
        }
        float iscale = nmax / max;
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            float diff = x[i] - scale * QuantMath.NearestInt(iscale * x[i]);
            bestError += weights[i] * diff * diff;
        }
        for (int step = -4; step <= 4; step++)
        {
            if (step == 0) continue;
            float trial = (0.1f * step + nmax) / max;
            float trialScale = 1 / trial;
            float error = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Min(nmax, QuantMath.NearestInt(trial * x[i]));
                float diff = x[i] - trialScale * l;
                error += weights[i] * diff * diff;
            }
            if (error < bestError)
            {
                bestError = error;
                iscale = trial;
            }
        }
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = Math.Min(nmax, QuantMath.NearestInt(iscale * x[i]));
            levels[i] = (byte)l;
            sumlx += weights[i] * x[i] * l;
            suml2 += weights[i] * l * l;
        }
        for (int pass = 0; pass < 5; pass++)
        {
            int changed = 0;
            for (int i = 0; i < n; i++)
            {
                float w = weights[i];
                float slx = sumlx - w * x[i] * levels[i];
                float sl2 = suml2 - w * levels[i] * levels[i];
                if (!(slx > 0 && sl2 > 0)) continue;
                int l = Math.Min(nmax, QuantMath.NearestInt(x[i] * sl2 / slx));
                if (l == levels[i]) continue;
                slx += w * x[i] * l;
                sl2 += w * l * l;
                if (slx * slx * suml2 > sumlx * sumlx * sl2)
                {
                    levels[i] = (byte)l;
                    sumlx = slx;
                    suml2 = sl2;
                    changed++;
                }
            }
            if (changed == 0) break;
        }
        return suml2 > 0 ? sumlx / suml2 : 0f;
    }
}
