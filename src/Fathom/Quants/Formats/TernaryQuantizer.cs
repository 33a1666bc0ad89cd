namespace Fathom.Quants.Formats;

/// <summary>
/// Fits one 256-value block of TQ1_0 / TQ2_0 with a scale d and trits t ∈ {−1, 0, 1}, value ≈ d·t.
/// ggml uses d = max|x| and t = round(x/d); here d and the set of non-zero trits are chosen together to minimise the
/// (importance-)weighted squared error: for the k largest magnitudes the best scale is Σw|x| / Σw, and the best k is
/// the one with the largest Σ(w|x|)² / Σw. Exactly ternary rows (±a, 0) are reproduced without error.
/// </summary>
internal static class TernaryQuantizer
{
    public const int BlockSize = 256;

    /// <summary>Writes the trits of <paramref name="x"/> and returns the f16 bits of the scale.</summary>
    public static ushort Fit(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<sbyte> trits)
    {
        Span<float> keys = stackalloc float[BlockSize];
        Span<int> order = stackalloc int[BlockSize];
        bool weighted = !importance.IsEmpty && Sum(importance) > 0;
        for (int i = 0; i < BlockSize; i++)
        {
            keys[i] = -MathF.Abs(x[i]);
            order[i] = i;
        }
        keys.Sort(order);

        // Grow the non-zero set by descending magnitude, keeping the size with the largest explained energy.
        double sumW = 0, sumWX = 0, bestEnergy = 0;
        double scale = 0;
        for (int k = 0; k < BlockSize; k++)
        {
            int i = order[k];
            double w = weighted ? importance[i] : 1;
            sumW += w;
            sumWX += w * Math.Abs(x[i]);
            if (sumW > 0 && sumWX * sumWX > bestEnergy * sumW)
            {
                bestEnergy = sumWX * sumWX / sumW;
                scale = sumWX / sumW;
            }
        }

        // Round the scale to f16, assign trits under it, and refit the scale to that assignment once.
        ushort dBits = Fp16.FromSingle((float)scale);
        for (int pass = 0; pass < 2; pass++)
        {
            float d = Fp16.Lookup(dBits);
            Assign(x, d, trits);
            if (pass == 1) break;
            double num = 0, den = 0;
            for (int i = 0; i < BlockSize; i++)
            {
                if (trits[i] == 0) continue;
                double w = weighted ? importance[i] : 1;
                num += w * x[i] * trits[i];
                den += w;
            }
            if (den > 0) dBits = Fp16.FromSingle((float)(num / den));
        }
        return dBits;
    }

    private static void Assign(ReadOnlySpan<float> x, float d, Span<sbyte> trits)
    {
        float half = d / 2;
        for (int i = 0; i < BlockSize; i++)
            trits[i] = d <= 0 ? (sbyte)0 : x[i] > half ? (sbyte)1 : x[i] < -half ? (sbyte)-1 : (sbyte)0;
    }

    private static float Sum(ReadOnlySpan<float> values)
    {
        float sum = 0;
        foreach (float v in values) sum += v;
        return sum;
    }
}
