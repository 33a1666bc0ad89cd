using System.Runtime.Intrinsics;
using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats;

/// <summary>
/// The 16 non-linear levels of IQ4_NL / IQ4_XS (ggml's <c>kvalues_iq4nl</c>) and the importance-weighted
/// scale search both formats quantize 32-value groups with.
/// </summary>
internal static class Iq4NonLinear
{
    /// <summary>The levels, ascending; a 4-bit index selects one.</summary>
    public static readonly sbyte[] Levels = QuantTables.KvaluesIq4nl;

    /// <summary>The levels as a byte-shuffle table (pshufb / tbl operand).</summary>
    public static readonly Vector128<sbyte> LevelTable = Vector128.Create(Levels);

    /// <summary>Groups whose largest magnitude is below this are stored as zero (ggml's GROUP_MAX_EPS).</summary>
    private const float GroupMaxEps = 1e-15f;

    /// <summary>How many scale candidates either side of the extreme level the search tries (ggml's ntry).</summary>
    private const int ScaleSteps = 7;

    /// <summary>Index of the level nearest to <paramref name="x"/> (in level units).</summary>
    public static int NearestLevel(float x)
    {
        sbyte[] v = Levels;
        if (x <= v[0]) return 0;
        if (x >= v[15]) return 15;
        int lo = 0, hi = 15;
        while (hi - lo > 1)
        {
            int mid = (lo + hi) >> 1;
            if (x < v[mid]) hi = mid; else lo = mid;
        }
        return x - v[hi - 1] < v[hi] - x ? hi - 1 : hi;
    }

    /// <summary>
    /// The least-squares scale of one group: tries inverse scales that put the largest magnitude on or near either
    /// extreme level, assigns nearest levels, and keeps the scale with the largest explained weighted energy.
    /// Returns 0 for a group of (near) zeros.
    /// </summary>
    public static float BestScale(ReadOnlySpan<float> x, ReadOnlySpan<float> weights)
    {
        float amax = 0, max = 0;
        foreach (float v in x)
        {
            float a = MathF.Abs(v);
            if (a > amax) { amax = a; max = v; }
        }
        if (amax < GroupMaxEps) return 0;

        float bestScale = 0, bestEnergy = 0;
        for (int side = 0; side < 2; side++)
        {
            float extreme = side == 0 ? Levels[0] : Levels[15];
            for (int step = -ScaleSteps; step <= ScaleSteps; step++)
            {
                float inverse = (step + extreme) / max;
                float sumqx = 0, sumq2 = 0;
                for (int j = 0; j < x.Length; j++)
                {
                    float q = Levels[NearestLevel(inverse * x[j])];
                    sumqx += weights[j] * q * x[j];
                    sumq2 += weights[j] * q * q;
                }
                // Explained energy sumqx²/sumq2 compared without dividing.
                if (sumq2 > 0 && sumqx * sumqx > bestEnergy * sumq2)
                {
                    bestScale = sumqx / sumq2;
                    bestEnergy = bestScale * sumqx;
                }
            }
        }
        return bestScale;
    }

    /// <summary>
    /// <see cref="BestScale"/> under ggml's fitting weights and under the error metric's own weights (importance, or
    /// 1); returns whichever has the smaller metric error.
    /// </summary>
    public static float BestScale(ReadOnlySpan<float> x, ReadOnlySpan<float> fitWeights, ReadOnlySpan<float> metricWeights, Span<byte> scratch)
    {
        float a = BestScale(x, fitWeights);
        float b = BestScale(x, metricWeights);
        return Assign(x, metricWeights, a, scratch) <= Assign(x, metricWeights, b, scratch) ? a : b;
    }

    /// <summary>The weights of the error being minimised: the importance, or 1 without one.</summary>
    public static void MetricWeights(ReadOnlySpan<float> importance, Span<float> weights)
    {
        if (importance.IsEmpty) weights.Fill(1); else importance.CopyTo(weights);
    }

    /// <summary>Assigns each value its nearest level under <paramref name="scale"/>; returns the weighted squared error.</summary>
    public static float Assign(ReadOnlySpan<float> x, ReadOnlySpan<float> weights, float scale, Span<byte> indices)
    {
        float inverse = scale != 0 ? 1 / scale : 0;
        float error = 0;
        for (int j = 0; j < x.Length; j++)
        {
            int l = NearestLevel(inverse * x[j]);
            indices[j] = (byte)l;
            float diff = x[j] - scale * Levels[l];
            error += weights[j] * diff * diff;
        }
        return error;
    }

    /// <summary>Packs 32 level indices: byte j holds value j in its low nibble and value j+16 in its high nibble.</summary>
    public static void Pack32(ReadOnlySpan<byte> indices, Span<byte> packed)
    {
        for (int j = 0; j < 16; j++) packed[j] = (byte)(indices[j] | (indices[j + 16] << 4));
    }
}
