namespace Fathom.Quants.Formats.LowBitIq;

/// <summary>
/// Pieces shared by the IQ1_S and IQ1_M quantizers (ggml's quantize_row_iq1_{s,m}_impl). Values are ternary
/// {-1, 0, 1} shifted by ±delta: with only three levels, the weighted least-squares optimum over all ways of cutting
/// the sorted values into three runs is found exhaustively from prefix sums; 8-runs that land off the 2048-entry
/// grid then move to their best neighbour.
/// </summary>
internal static class Iq1TernaryQuantizer
{
    /// <summary>The ternary level key with every value 0 (level 1): the grid point closest to an all-zero group.</summary>
    public const int ZeroKey = 0x5555;

    /// <summary>Grid entry for an 8-run of levels, moving to the neighbour with least weighted error if it is off the grid.</summary>
    public static int EntryFor(IqGridIndex grid, Span<sbyte> levels, ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float scale, ReadOnlySpan<float> shifted, out bool onGrid)
    {
        int key = IqGridIndex.Key(levels);
        int entry = grid.Entry(key);
        onGrid = entry >= 0;
        if (onGrid) return entry;
        float best = float.MaxValue;
        foreach (ushort candidate in grid.NeighboursOf(key))
        {
            ReadOnlySpan<sbyte> p = grid.LevelsOf(candidate);
            float d2 = 0;
            for (int i = 0; i < 8; i++)
            {
                float diff = scale * shifted[p[i]] - x[i];
                d2 += weight[i] * diff * diff;
            }
            if (d2 < best) { best = d2; entry = candidate; }
        }
        if (entry < 0) entry = grid.NeighboursOf(key)[0];
        grid.LevelsOf(entry).CopyTo(levels);
        return entry;
    }

    /// <summary>The grid entry nearest to all zeros, used for groups too small to quantize.</summary>
    public static int ZeroEntry(IqGridIndex grid)
    {
        int entry = grid.Entry(ZeroKey);
        return entry >= 0 ? entry : grid.NeighboursOf(ZeroKey)[0];
    }

    /// <summary>Positions 0..n-1 ordered by ascending value (ties by position).</summary>
    public static void SortedOrder(ReadOnlySpan<float> x, Span<int> order, Span<float> keys)
    {
        int n = x.Length;
        for (int i = 0; i < n; i++) { order[i] = i; keys[i] = x[i]; }
        // Insertion sort: groups are 16 or 32 values, and this keeps ties in position order without allocating.
        for (int i = 1; i < n; i++)
        {
            float k = keys[i];
            int o = order[i], j = i - 1;
            while (j >= 0 && keys[j] > k) { keys[j + 1] = keys[j]; order[j + 1] = order[j]; j--; }
            keys[j + 1] = k;
            order[j + 1] = o;
        }
    }

    /// <summary>Per-element weights: importance·sqrt(σ² + x²) with an importance matrix, else x²; all-zero falls back to uniform.</summary>
    public static void Weights(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, float sigma2, Span<float> weight)
    {
        float sum = 0;
        for (int i = 0; i < x.Length; i++)
        {
            weight[i] = importance.IsEmpty ? x[i] * x[i] : importance[i] * MathF.Sqrt(sigma2 + x[i] * x[i]);
            sum += weight[i];
        }
        if (!(sum > 0)) weight[..x.Length].Fill(1);
    }
}
