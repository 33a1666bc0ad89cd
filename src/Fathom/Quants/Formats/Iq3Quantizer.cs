namespace Fathom.Quants.Formats;

/// <summary>
/// Quantizes one 256-value super-block for IQ3_XXS / IQ3_S, in the manner of ggml's quantize_row_iq3_xxs/_s_impl:
/// signs are split off, and each group of 32 magnitudes gets the least-squares scale over a sweep of inverse scales,
/// each rounding groups of four to the codebook lattice (or its best neighbour off the codebook). Then the
/// super-block scale d and the 4-bit group scales ls (group scale d·(2ls+1)) are chosen jointly by least squares
/// over a range of d around ggml's max/31 rule, and groups of four are re-fitted to their final group scale.
/// </summary>
internal static class Iq3Quantizer
{
    public const int BlockSize = 256;
    private const int Groups = 8;
    private const float GroupMaxEps = 1e-8f;

    /// <summary>Parameters that differ between the two formats.</summary>
    /// <param name="Index">The codebook.</param>
    /// <param name="EvenSigns">IQ3_XXS stores 7 sign bits per 8 values; the eighth is their parity.</param>
    /// <param name="ScaleSteps">Inverse scales tried either side of 15/max, in steps of 0.2.</param>
    /// <param name="Fudge">ggml's factor on max/31 for d; the d search is centred on it.</param>
    public readonly record struct Variant(Iq3GridIndex Index, bool EvenSigns, int ScaleSteps, float Fudge);

    /// <summary>
    /// Writes 64 codebook entries (values 4k..4k+3), 32 sign bytes (bit i set: value 8k+i negative) and 8 group scales
    /// ls ∈ [0, 15]; returns the f16 bits of d. Dequantized value: d·(2ls+1)·magnitude·sign.
    /// </summary>
    public static ushort Quantize(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, in Variant variant,
        Span<ushort> entries, Span<byte> signs, Span<byte> groupScales)
    {
        Iq3GridIndex index = variant.Index;
        Span<float> weights = stackalloc float[BlockSize];
        Span<float> sqrtWeights = stackalloc float[BlockSize];
        Span<float> xval = stackalloc float[BlockSize];
        Span<float> scales = stackalloc float[Groups];
        Span<ushort> trial = stackalloc ushort[8];
        Span<bool> onGrid = stackalloc bool[8];
        Span<bool> trialOnGrid = stackalloc bool[8];

        Span<float> metric = stackalloc float[BlockSize];
        ImportanceFit.Weights(x, importance, ImportanceFit.Sigma2(x), weights);
        // The search above fits with ggml's weights; the final choices minimise the error that matters, Σ importance·(x − y)².
        if (importance.IsEmpty) metric.Fill(1); else importance.CopyTo(metric);
        for (int i = 0; i < BlockSize; i++) sqrtWeights[i] = MathF.Sqrt(weights[i]);
        SplitSigns(x, weights, variant.EvenSigns, xval, signs);

        float maxScale = 0;
        for (int ib = 0; ib < Groups; ib++)
        {
            Span<float> xg = xval.Slice(32 * ib, 32);
            ReadOnlySpan<float> wg = weights.Slice(32 * ib, 32), sg = sqrtWeights.Slice(32 * ib, 32);
            Span<ushort> eg = entries.Slice(8 * ib, 8);
            float max = 0;
            foreach (float v in xg) max = MathF.Max(max, v);
            if (max < GroupMaxEps)
            {
                scales[ib] = 0;
                eg.Clear();
                continue;
            }

            float scale = max / 15, best = 0;
            onGrid.Fill(true);
            for (int step = -variant.ScaleSteps; step <= variant.ScaleSteps; step++)
            {
                float inverse = (15 + step * 0.2f) / max;
                float trialScale = 1 / inverse;
                for (int k = 0; k < 8; k++)
                    trial[k] = (ushort)index.Nearest(xg.Slice(4 * k, 4), sg.Slice(4 * k, 4), inverse, trialScale, out trialOnGrid[k]);
                (float sumqx, float sumq2) = Moments(index, trial, xg, wg);
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2)
                {
                    scale = sumqx / sumq2;
                    best = scale * sumqx;
                    trial.CopyTo(eg);
                    trialOnGrid.CopyTo(onGrid);
                }
            }
            // Groups that fell off the codebook were matched under a trial scale; match them again under the chosen one.
            if (onGrid.Contains(false) && scale > 0)
            {
                for (int k = 0; k < 8; k++)
                    if (!onGrid[k]) eg[k] = (ushort)index.Nearest(xg.Slice(4 * k, 4), sg.Slice(4 * k, 4), 1 / scale, scale, out _);
                (float sumqx, float sumq2) = Moments(index, eg, xg, wg);
                if (sumq2 > 0) scale = sumqx / sumq2;
            }
            if (scale < 0)
            {
                // Flipping all eight signs of each byte keeps their parity.
                scale = -scale;
                for (int k = 0; k < 4; k++) signs[4 * ib + k] = (byte)~signs[4 * ib + k];
                for (int i = 0; i < 32; i++) xg[i] = -xg[i];
            }
            scales[ib] = scale;
            maxScale = MathF.Max(maxScale, scale);
        }

        if (maxScale == 0)
        {
            groupScales.Clear();
            return 0;
        }

        ushort dBits = ChooseSuperScale(index, xval, metric, entries, maxScale, variant.Fudge, groupScales);
        float d = Fp16.Lookup(dBits);

        // Re-fit each group of four to its final scale, keeping whichever entry has the lower weighted error.
        for (int ib = 0; ib < Groups; ib++)
        {
            float scale = d * (2 * groupScales[ib] + 1);
            if (scale <= 0) continue;
            for (int k = 0; k < 8; k++)
            {
                int slot = 8 * ib + k;
                ReadOnlySpan<float> xq = xval.Slice(4 * slot, 4), wq = metric.Slice(4 * slot, 4);
                int candidate = index.Nearest(xq, wq, 1 / scale, scale, out _);
                if (index.Error(candidate, xq, wq, scale) < index.Error(entries[slot], xq, wq, scale)) entries[slot] = (ushort)candidate;
            }
            groupScales[ib] = (byte)BestGroupScale(index, xval.Slice(32 * ib, 32), metric.Slice(32 * ib, 32), entries.Slice(8 * ib, 8), d);
        }
        return dBits;
    }

    /// <summary>Takes signs off: xval = |x| except that IQ3_XXS forces even parity by flipping the cheapest value.</summary>
    private static void SplitSigns(ReadOnlySpan<float> x, ReadOnlySpan<float> weights, bool evenSigns, Span<float> xval, Span<byte> signs)
    {
        for (int k = 0; k < BlockSize / 8; k++)
        {
            int s = 0;
            for (int i = 0; i < 8; i++)
            {
                float v = x[8 * k + i];
                xval[8 * k + i] = MathF.Abs(v);
                if (v < 0) s |= 1 << i;
            }
            if (evenSigns && (System.Numerics.BitOperations.PopCount((uint)s) & 1) != 0)
            {
                int cheapest = 0;
                float least = float.MaxValue;
                for (int i = 0; i < 8; i++)
                {
                    float cost = weights[8 * k + i] * x[8 * k + i] * x[8 * k + i];
                    if (cost < least) { least = cost; cheapest = i; }
                }
                // That value is stored with the wrong sign; fitting −|x| accounts for it.
                xval[8 * k + cheapest] = -xval[8 * k + cheapest];
                s ^= 1 << cheapest;
            }
            signs[k] = (byte)s;
        }
    }

    /// <summary>Σw·x·q and Σw·q² of a group against its entries.</summary>
    private static (float SumQX, float SumQ2) Moments(Iq3GridIndex index, ReadOnlySpan<ushort> entries, ReadOnlySpan<float> x, ReadOnlySpan<float> w)
    {
        float[] magnitudes = index.Magnitudes;
        float sumqx = 0, sumq2 = 0;
        for (int k = 0; k < entries.Length; k++)
            for (int i = 0; i < 4; i++)
            {
                float q = magnitudes[4 * entries[k] + i];
                sumqx += w[4 * k + i] * x[4 * k + i] * q;
                sumq2 += w[4 * k + i] * q * q;
            }
        return (sumqx, sumq2);
    }

    /// <summary>The ls ∈ [0, 15] whose group scale d·(2ls+1) has the least weighted error; errors are relative to ∑w·x².</summary>
    private static int BestGroupScale(Iq3GridIndex index, ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<ushort> entries, float d)
    {
        (float b, float c) = Moments(index, entries, x, w);
        return BestGroupScale(b, c, d, out _);
    }

    private static int BestGroupScale(float b, float c, float d, out float error)
    {
        // error(S) = S²c − 2Sb is a parabola in S: only the odd multiples of d either side of b/c can be best.
        int center = c > 0 && d > 0 ? Math.Clamp((int)MathF.Floor((b / c / d - 1) / 2), 0, 15) : 0;
        int best = center;
        error = float.MaxValue;
        for (int ls = center; ls <= Math.Min(15, center + 1); ls++)
        {
            float s = d * (2 * ls + 1);
            float e = s * s * c - 2 * s * b;
            if (e < error) { error = e; best = ls; }
        }
        return best;
    }

    /// <summary>Picks d (f16) minimising the total error over the group scales it allows, around ggml's fudge·max/31.</summary>
    private static ushort ChooseSuperScale(Iq3GridIndex index, ReadOnlySpan<float> xval, ReadOnlySpan<float> weights, ReadOnlySpan<ushort> entries,
        float maxScale, float fudge, Span<byte> groupScales)
    {
        Span<float> b = stackalloc float[Groups], c = stackalloc float[Groups];
        for (int ib = 0; ib < Groups; ib++)
            (b[ib], c[ib]) = Moments(index, entries.Slice(8 * ib, 8), xval.Slice(32 * ib, 32), weights.Slice(32 * ib, 32));

        ushort bestBits = Fp16.FromSingle(maxScale / 31 * fudge);
        float bestError = float.MaxValue;
        for (int step = -12; step <= 12; step++)
        {
            // step 0 is ggml's own choice, so the search can only improve on it.
            ushort bits = Fp16.FromSingle(maxScale / 31 * (fudge + 0.01f * step));
            float d = Fp16.Lookup(bits);
            float total = 0;
            for (int ib = 0; ib < Groups; ib++)
            {
                BestGroupScale(b[ib], c[ib], d, out float e);
                total += e;
            }
            if (total < bestError)
            {
                bestError = total;
                bestBits = bits;
            }
        }
        float chosen = Fp16.Lookup(bestBits);
        for (int ib = 0; ib < Groups; ib++) groupScales[ib] = (byte)BestGroupScale(b[ib], c[ib], chosen, out _);
        return bestBits;
    }
}
