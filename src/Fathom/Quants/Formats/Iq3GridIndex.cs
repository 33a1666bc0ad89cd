using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats;

/// <summary>
/// Search structure over one IQ3 codebook (ggml's iq3xxs_grid of 256 or iq3s_grid of 512 entries). Each entry holds
/// four magnitudes on one of 8 levels; a point of the full 8⁴ lattice maps to its entry, or, when the codebook lacks
/// it, to the entries at the nearest few distinct lattice distances (ggml keeps 2 rings for IQ3_XXS, 3 for IQ3_S).
/// </summary>
internal sealed class Iq3GridIndex
{
    public static Iq3GridIndex Xxs => XxsIndex.Value;
    public static Iq3GridIndex S => SIndex.Value;

    private static readonly Lazy<Iq3GridIndex> XxsIndex = new(() => new Iq3GridIndex(QuantTables.Iq3xxsGrid, unit: 4, rings: 2));
    private static readonly Lazy<Iq3GridIndex> SIndex = new(() => new Iq3GridIndex(QuantTables.Iq3sGrid, unit: 1, rings: 3));

    private const int LatticePoints = 8 * 8 * 8 * 8;

    /// <summary>The codebook: four magnitude bytes per entry, little-endian.</summary>
    public uint[] Grid { get; }

    /// <summary>Magnitudes of entry e at [4e..4e+3], in units of the group scale (grid byte / unit).</summary>
    public float[] Magnitudes { get; }

    private readonly int[] _entryOfPoint;
    private readonly int[] _neighbourStart;
    private readonly ushort[] _neighbours;

    private Iq3GridIndex(uint[] grid, int unit, int rings)
    {
        Grid = grid;
        byte[] levelBytes = [.. grid.SelectMany(BitConverter.GetBytes).Distinct().Order()];
        if (levelBytes.Length != 8) throw new InvalidOperationException($"An IQ3 grid must use 8 levels, found {levelBytes.Length}.");

        Magnitudes = new float[grid.Length * 4];
        var pointOfEntry = new int[grid.Length];
        var levelsOfEntry = new int[grid.Length * 4];
        _entryOfPoint = new int[LatticePoints];
        Array.Fill(_entryOfPoint, -1);
        for (int e = 0; e < grid.Length; e++)
        {
            int point = 0;
            for (int i = 0; i < 4; i++)
            {
                byte b = (byte)(grid[e] >> (8 * i));
                int level = Array.IndexOf(levelBytes, b);
                levelsOfEntry[4 * e + i] = level;
                Magnitudes[4 * e + i] = (float)b / unit;
                point |= level << (3 * i);
            }
            pointOfEntry[e] = point;
            _entryOfPoint[point] = e;
        }

        // For every lattice point off the codebook: the entries within its `rings` smallest distinct distances.
        _neighbourStart = new int[LatticePoints + 1];
        var neighbours = new List<ushort>();
        var distances = new (int Distance, int Entry)[grid.Length];
        for (int point = 0; point < LatticePoints; point++)
        {
            _neighbourStart[point] = neighbours.Count;
            if (_entryOfPoint[point] >= 0) continue;
            for (int e = 0; e < grid.Length; e++)
            {
                int d2 = 0;
                for (int i = 0; i < 4; i++)
                {
                    int diff = ((point >> (3 * i)) & 7) - levelsOfEntry[4 * e + i];
                    d2 += diff * diff;
                }
                distances[e] = (d2, e);
            }
            Array.Sort(distances);
            int ringCount = 1;
            int ringDistance = distances[0].Distance;
            foreach ((int distance, int entry) in distances)
            {
                if (distance > ringDistance)
                {
                    if (ringCount == rings) break;
                    ringDistance = distance;
                    ringCount++;
                }
                neighbours.Add((ushort)entry);
            }
        }
        _neighbourStart[LatticePoints] = neighbours.Count;
        _neighbours = [.. neighbours];
    }

    /// <summary>
    /// The entry for four values at (inverse) scale: each value is rounded to its lattice level; if the codebook lacks
    /// that point, the neighbour with the least weighted error at <paramref name="scale"/> is taken. Sets onGrid.
    /// </summary>
    public int Nearest(ReadOnlySpan<float> x, ReadOnlySpan<float> weights, float inverseScale, float scale, out bool onGrid)
    {
        int point = 0;
        for (int i = 0; i < 4; i++)
        {
            // Levels sit at odd multiples 2l+1 of the scale.
            int l = Math.Clamp(QuantMath.RoundHalfToEven(0.5f * (inverseScale * x[i] - 1)), 0, 7);
            point |= l << (3 * i);
        }
        int entry = _entryOfPoint[point];
        onGrid = entry >= 0;
        return onGrid ? entry : BestOf(_neighbours.AsSpan(_neighbourStart[point], _neighbourStart[point + 1] - _neighbourStart[point]), x, weights, scale);
    }

    /// <summary>Weighted squared error of four values against entry <paramref name="entry"/> at <paramref name="scale"/>.</summary>
    public float Error(int entry, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, float scale)
    {
        float error = 0;
        for (int i = 0; i < 4; i++)
        {
            float diff = scale * Magnitudes[4 * entry + i] - x[i];
            error += weights[i] * diff * diff;
        }
        return error;
    }

    private int BestOf(ReadOnlySpan<ushort> candidates, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, float scale)
    {
        int best = candidates[0];
        float bestError = float.MaxValue;
        foreach (ushort entry in candidates)
        {
            float error = Error(entry, x, weights, scale);
            if (error < bestError)
            {
                bestError = error;
                best = entry;
            }
        }
        return best;
    }
}
