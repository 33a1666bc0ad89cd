namespace Fathom.Quants.Formats.LowBitIq;

/// <summary>
/// The search the IQ2 quantizers share (ggml's quantize_row_iq2_{xxs,xs,s}_impl): a group of 16 or 32 magnitudes
/// is rounded onto the lattice at a range of trial scales, each 8-run that falls off the grid is moved to its best
/// weighted neighbour, and the trial with the best weighted least-squares fit wins. Lattice coordinates are
/// q = 2l + 1 ∈ {1, 3, 5}; the dequantizer's grid bytes (8, 25, 43) are those times ≈ 8.
/// </summary>
internal static class Iq2LatticeQuantizer
{
    /// <summary>How one format steers the scale search.</summary>
    /// <param name="Tries">Trial scales run over (5 + 0.1·is)/reference for is ∈ [-Tries, Tries].</param>
    /// <param name="ReferenceFromLeastSquares">
    /// True (IQ2_XXS): the reference is 3× a least-squares uniform-quant scale of the group; false: its maximum.
    /// </param>
    /// <param name="RequantizeAll">True: after the search every 8-run is re-rounded at the final scale; false: only off-grid runs.</param>
    public readonly record struct Search(int Tries, bool ReferenceFromLeastSquares, bool RequantizeAll);

    /// <summary>
    /// Chooses grid entries for <paramref name="xval"/> (non-negative magnitudes apart from a parity flip, length a
    /// multiple of 8) and returns the fitted group scale (≥ 0 in practice; negative means signs must flip).
    /// </summary>
    public static float QuantizeGroup(IqGridIndex grid, Search search, ReadOnlySpan<float> xval, ReadOnlySpan<float> weight,
        ReadOnlySpan<float> waux, Span<int> entries, Span<sbyte> levels, Span<sbyte> trial)
    {
        int n = xval.Length, runs = n / 8;
        Span<bool> onGrid = stackalloc bool[4];
        Span<bool> trialOnGrid = stackalloc bool[4];

        float max = 0;
        for (int i = 0; i < n; i++) max = MathF.Max(max, xval[i]);
        float reference = search.ReferenceFromLeastSquares ? 3 * UniformScale(xval, weight, 4, trial) : max;
        if (!(reference > 0)) reference = max;
        float scale = max / 5;
        float best = 0;
        bool accepted = false;
        for (int step = -search.Tries; step <= search.Tries; step++)
        {
            float id = (5 + step * 0.1f) / reference;
            float trialScale = 1 / id;
            for (int k = 0; k < runs; k++)
            {
                Span<sbyte> run = trial.Slice(8 * k, 8);
                for (int i = 0; i < 8; i++) run[i] = (sbyte)Math.Clamp(QuantMath.RoundHalfToEven(0.5f * (id * xval[8 * k + i] - 1)), 0, 2);
                int key = IqGridIndex.Key(run);
                trialOnGrid[k] = grid.Entry(key) >= 0;
                if (!trialOnGrid[k]) BestNeighbour(grid, key, xval.Slice(8 * k, 8), waux.Slice(8 * k, 8), trialScale, run);
            }
            float sumqx = 0, sumq2 = 0;
            for (int i = 0; i < n; i++)
            {
                float w = weight[i], q = 2 * trial[i] + 1;
                sumqx += w * xval[i] * q;
                sumq2 += w * q * q;
            }
            bool better = sumq2 > 0 && sumqx * sumqx > best * sumq2;
            if (better || !accepted)
            {
                if (sumq2 > 0) { scale = sumqx / sumq2; best = scale * sumqx; }
                trial[..n].CopyTo(levels);
                trialOnGrid.CopyTo(onGrid);
                accepted = true;
            }
        }

        bool anyOff = false;
        for (int k = 0; k < runs; k++) anyOff |= !onGrid[k];
        if ((search.RequantizeAll || anyOff) && scale > 0)
        {
            float id = 1 / scale;
            for (int k = 0; k < runs; k++)
            {
                if (!search.RequantizeAll && onGrid[k]) continue;
                Span<sbyte> run = levels.Slice(8 * k, 8);
                for (int i = 0; i < 8; i++) run[i] = (sbyte)Math.Clamp(QuantMath.RoundHalfToEven(0.5f * (id * xval[8 * k + i] - 1)), 0, 2);
                int key = IqGridIndex.Key(run);
                if (grid.Entry(key) < 0) BestNeighbour(grid, key, xval.Slice(8 * k, 8), waux.Slice(8 * k, 8), scale, run);
            }
            float sumqx = 0, sumq2 = 0;
            for (int i = 0; i < n; i++)
            {
                float w = weight[i], q = 2 * levels[i] + 1;
                sumqx += w * xval[i] * q;
                sumq2 += w * q * q;
            }
            if (sumq2 > 0) scale = sumqx / sumq2;
        }

        for (int k = 0; k < runs; k++)
        {
            int entry = grid.Entry(IqGridIndex.Key(levels.Slice(8 * k, 8)));
            if (entry < 0) throw new InvalidOperationException("IQ2 quantizer left a run off the grid.");
            entries[k] = entry;
        }
        return scale;
    }

    /// <summary>ggml's iq2_find_best_neighbour: the neighbour with the least weighted squared error at <paramref name="scale"/>.</summary>
    private static void BestNeighbour(IqGridIndex grid, int key, ReadOnlySpan<float> xval, ReadOnlySpan<float> waux, float scale, Span<sbyte> run)
    {
        float bestD2 = float.MaxValue;
        int bestEntry = -1;
        foreach (ushort entry in grid.NeighboursOf(key))
        {
            ReadOnlySpan<sbyte> p = grid.LevelsOf(entry);
            float d2 = 0;
            for (int i = 0; i < 8; i++)
            {
                float diff = scale * (2 * p[i] + 1) - xval[i];
                d2 += waux[i] * diff * diff;
            }
            if (d2 < bestD2) { bestD2 = d2; bestEntry = entry; }
        }
        if (bestEntry < 0) bestEntry = grid.NeighboursOf(key)[0];
        grid.LevelsOf(bestEntry).CopyTo(run);
    }

    /// <summary>ggml's make_qp_quants: a weighted least-squares scale for levels 0..nmax of non-negative values.</summary>
    private static float UniformScale(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, int nmax, Span<sbyte> l)
    {
        int n = x.Length;
        float max = 0;
        for (int i = 0; i < n; i++) max = MathF.Max(max, x[i]);
        if (max < 1e-15f) return 0;
        float iscale = nmax / max;
        float scale = 1 / iscale, bestMse = 0;
        for (int i = 0; i < n; i++)
        {
            float diff = x[i] - scale * QuantMath.RoundHalfToEven(iscale * x[i]);
            bestMse += weight[i] * diff * diff;
        }
        for (int step = -4; step <= 4; step++)
        {
            if (step == 0) continue;
            float iscaleTry = (0.1f * step + nmax) / max, scaleTry = 1 / iscaleTry, mse = 0;
            for (int i = 0; i < n; i++)
            {
                float diff = x[i] - scaleTry * Math.Min(nmax, QuantMath.RoundHalfToEven(iscaleTry * x[i]));
                mse += weight[i] * diff * diff;
            }
            if (mse < bestMse) { bestMse = mse; iscale = iscaleTry; }
        }
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int q = Math.Min(nmax, QuantMath.RoundHalfToEven(iscale * x[i]));
            l[i] = (sbyte)q;
            sumlx += weight[i] * x[i] * q;
            suml2 += weight[i] * q * q;
        }
        for (int pass = 0; pass < 5; pass++)
        {
            int changed = 0;
            for (int i = 0; i < n; i++)
            {
                float w = weight[i];
                float slx = sumlx - w * x[i] * l[i], sl2 = suml2 - w * l[i] * l[i];
                if (slx <= 0 || sl2 <= 0) continue;
                int q = Math.Min(nmax, QuantMath.RoundHalfToEven(x[i] * sl2 / slx));
                if (q == l[i]) continue;
                slx += w * x[i] * q;
                sl2 += w * q * q;
                if (slx * slx * suml2 > sumlx * sumlx * sl2)
                {
                    l[i] = (sbyte)q; sumlx = slx; suml2 = sl2; changed++;
                }
            }
            if (changed == 0) break;
        }
        return suml2 > 0 ? sumlx / suml2 : 0;
    }

    /// <summary>
    /// Per-element weights as ggml derives them: importance·sqrt(σ² + x²) with an importance matrix, otherwise
    /// <c>fallbackSigma</c>·σ² + x². A group whose weights are all zero falls back to uniform weights so that its
    /// fit stays well defined.
    /// </summary>
    public static void Weights(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, float sigma2, float fallbackSigma, Span<float> weight)
    {
        float sum = 0;
        for (int i = 0; i < x.Length; i++)
        {
            weight[i] = importance.IsEmpty ? fallbackSigma * sigma2 + x[i] * x[i] : importance[i] * MathF.Sqrt(sigma2 + x[i] * x[i]);
            sum += weight[i];
        }
        if (!(sum > 0)) weight[..x.Length].Fill(1);
    }

    /// <summary>
    /// Splits each 8-run into magnitudes and a sign byte (bit i set: element i negative). With
    /// <paramref name="evenParity"/> (IQ2_XXS, IQ2_XS store only 7 sign bits) a run with an odd number of negatives
    /// gives up the sign of its least important element, whose magnitude then enters the fit negated.
    /// </summary>
    public static void SplitSigns(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> xval, Span<byte> signs, bool evenParity)
    {
        for (int k = 0; k < x.Length / 8; k++)
        {
            int s = 0, negatives = 0;
            for (int i = 0; i < 8; i++)
            {
                float v = x[8 * k + i];
                if (v >= 0) xval[8 * k + i] = v;
                else { xval[8 * k + i] = -v; negatives++; s |= 1 << i; }
            }
            if (evenParity && (negatives & 1) != 0)
            {
                int imin = 0;
                float min = weight[8 * k] * x[8 * k] * x[8 * k];
                for (int i = 1; i < 8; i++)
                {
                    float a = weight[8 * k + i] * x[8 * k + i] * x[8 * k + i];
                    if (a < min) { min = a; imin = i; }
                }
                xval[8 * k + imin] = -xval[8 * k + imin];
                s ^= 1 << imin;
            }
            signs[k] = (byte)s;
        }
    }

    /// <summary>The 4-bit code of a group scale relative to the block scale d (value = d·(2l+1)), as ggml rounds it.</summary>
    public static int ScaleCode(float scale, float inverseD, int maxCode) =>
        Math.Clamp(QuantMath.RoundHalfToEven(0.5f * (inverseD * scale - 1)), 0, maxCode);
}
