namespace Fathom.Quants.Formats;

/// <summary>
/// The encoder Q4_K and Q5_K share: a super-block of eight 32-value sub-blocks, each x ≈ d·sc·l − dmin·m with
/// 6-bit sub-block scale sc and min m and levels l in [0, nmax]. Without importance it follows ggml's
/// quantize_row_qN_K_ref (sub-block fits weighted by rms + |x|, scales and mins rounded on a max-based grid); with
/// importance it follows quantize_qN_K_impl (weights imp·√(σ² + x²), wider scale fan, and the 6-bit scales
/// and mins themselves fitted by weighted least squares).
/// </summary>
internal static class KQuantAffineEncoder
{
    public const int SubBlocks = 8;
    public const int SubBlock = 32;

    /// <summary>Encodes one super-block: writes the 12-byte scale field and the levels, returns (d, dmin) as stored fp16 values.</summary>
    public static (float D, float DMin) Encode(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, int nmax,
        float refMinStep, float refStepSize, int refSteps, Span<byte> scaleField, Span<byte> levels)
    {
        Span<byte> scratch = stackalloc byte[SubBlock];
        Span<float> weights = stackalloc float[SubBlock];
        Span<float> scales = stackalloc float[SubBlocks];
        Span<float> mins = stackalloc float[SubBlocks];
        Span<byte> scaleLevels = stackalloc byte[SubBlocks];
        Span<byte> minLevels = stackalloc byte[SubBlocks];
        float d, dmin;

        if (importance.IsEmpty)
        {
            float maxScale = 0, maxMin = 0;
            for (int j = 0; j < SubBlocks; j++)
            {
                ReadOnlySpan<float> xs = x.Slice(SubBlock * j, SubBlock);
                float sumX2 = 0;
                for (int l = 0; l < SubBlock; l++) sumX2 += xs[l] * xs[l];
                float rms = MathF.Sqrt(sumX2 / SubBlock);
                for (int l = 0; l < SubBlock; l++) weights[l] = rms + MathF.Abs(xs[l]);
                scales[j] = KQuantSearch.Affine(xs, nmax, weights, levels.Slice(SubBlock * j, SubBlock), scratch, out mins[j],
                    refMinStep, refStepSize, refSteps, absoluteError: false);
                maxScale = MathF.Max(maxScale, scales[j]);
                maxMin = MathF.Max(maxMin, mins[j]);
            }
            float inverseScale = maxScale > 0 ? 63f / maxScale : 0f;
            float inverseMin = maxMin > 0 ? 63f / maxMin : 0f;
            for (int j = 0; j < SubBlocks; j++)
            {
                // As ggml: the rounded level is taken modulo 256 before clamping to 63.
                scaleLevels[j] = Math.Min((byte)63, (byte)QuantMath.NearestInt(inverseScale * scales[j]));
                minLevels[j] = Math.Min((byte)63, (byte)QuantMath.NearestInt(inverseMin * mins[j]));
            }
            d = maxScale / 63f;
            dmin = maxMin / 63f;
        }
        else
        {
            Span<float> weightSums = stackalloc float[SubBlocks];
            float sumX2 = 0;
            for (int l = 0; l < KQuantBlocks.SuperBlock; l++) sumX2 += x[l] * x[l];
            float sigma2 = 2 * sumX2 / KQuantBlocks.SuperBlock;
            for (int j = 0; j < SubBlocks; j++)
            {
                ReadOnlySpan<float> xs = x.Slice(SubBlock * j, SubBlock);
                ReadOnlySpan<float> imp = importance.Slice(SubBlock * j, SubBlock);
                float sumW = 0;
                for (int l = 0; l < SubBlock; l++)
                {
                    weights[l] = imp[l] * MathF.Sqrt(sigma2 + xs[l] * xs[l]);
                    sumW += weights[l];
                }
                weightSums[j] = sumW;
                scales[j] = KQuantSearch.Affine(xs, nmax, weights, levels.Slice(SubBlock * j, SubBlock), scratch, out mins[j],
                    -0.9f, 0.05f, 36, absoluteError: false);
            }
            d = KQuantSearch.Positive(scales, 63, scaleLevels, weightSums);
            dmin = KQuantSearch.Positive(mins, 63, minLevels, weightSums);
        }

        KQuantScales.WriteScaleMins(scaleLevels, minLevels, scaleField);
        d = KQuantBlocks.RoundToHalf(d);
        dmin = KQuantBlocks.RoundToHalf(dmin);

        // Re-round every value against the scales as they will be decoded.
        for (int j = 0; j < SubBlocks; j++)
        {
            KQuantScales.ReadScaleMin(scaleField, j, out int sc, out int m);
            float step = d * sc;
            if (step == 0) continue;
            float offset = dmin * m;
            for (int l = 0; l < SubBlock; l++)
                levels[SubBlock * j + l] = (byte)Math.Clamp(QuantMath.NearestInt((x[SubBlock * j + l] + offset) / step), 0, nmax);
        }
        return (d, dmin);
    }
}
