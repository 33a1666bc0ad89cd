using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats.LowBitIq;

/// <summary>
/// The quantizer's view of one IQ1/IQ2 codebook, as ggml's <c>iq2xs_init_impl</c> builds it. Each grid entry is
/// eight lattice levels l ∈ {0, 1, 2} (coordinates 2l+1 = 1, 3, 5). A key packs eight levels two bits apiece; the map
/// sends a key that is on the grid to its entry, and any other key (with levels ≤ 2) to its neighbour list: every
/// grid entry within the <c>nearestShells</c> smallest squared distances, ordered by (distance, index).
/// Built lazily once per codebook; instances are immutable and safe to share between threads.
/// </summary>
internal sealed class IqGridIndex
{
    /// <summary>Keys range over eight 2-bit fields; levels never exceed 2, so the largest key is 0b1010…10.</summary>
    public const int KeyCount = 43692;

    private static readonly Lazy<IqGridIndex> Iq2xxsIndex = new(() => new IqGridIndex(QuantTables.Iq2xxsGrid, Iq2Levels, 2));
    private static readonly Lazy<IqGridIndex> Iq2xsIndex = new(() => new IqGridIndex(QuantTables.Iq2xsGrid, Iq2Levels, 2));
    private static readonly Lazy<IqGridIndex> Iq2sIndex = new(() => new IqGridIndex(QuantTables.Iq2sGrid, Iq2Levels, 1));
    private static readonly Lazy<IqGridIndex> Iq1Index = new(() => new IqGridIndex(QuantTables.Iq1sGrid, Iq1Levels, 3));

    public static IqGridIndex Iq2xxs => Iq2xxsIndex.Value;
    public static IqGridIndex Iq2xs => Iq2xsIndex.Value;
    public static IqGridIndex Iq2s => Iq2sIndex.Value;
    /// <summary>The 2048-entry grid shared by IQ1_S and IQ1_M.</summary>
    public static IqGridIndex Iq1 => Iq1Index.Value;

    /// <summary>Levels (0..2) of every entry, eight per entry.</summary>
    public readonly sbyte[] Levels;
    public readonly int Size;

    // ≥ 0: the grid entry of an on-grid key; < 0: -(start + 1) where Neighbours[start] is the list length.
    private readonly int[] _map;
    private readonly ushort[] _neighbours;

    private IqGridIndex(ulong[] grid, Func<byte, int> level, int nearestShells)
    {
        Size = grid.Length;
        Levels = new sbyte[Size * 8];
        _map = new int[KeyCount];
        Array.Fill(_map, int.MinValue);
        for (int e = 0; e < Size; e++)
        {
            int key = 0;
            for (int i = 0; i < 8; i++)
            {
                int l = level((byte)(grid[e] >> (8 * i)));
                if ((uint)l > 2) throw new InvalidOperationException("IQ grid value outside the 3-level lattice.");
                Levels[8 * e + i] = (sbyte)l;
                key |= l << (2 * i);
            }
            _map[key] = e;
        }

        var neighbours = new List<ushort>();
        Span<int> distance = stackalloc int[Size];
        Span<int> shellCount = stackalloc int[8 * 4 * 4 + 1]; // squared level distance ≤ 8 · 2²
        Span<int> levels = stackalloc int[8];
        for (int key = 0; key < KeyCount; key++)
        {
            if (_map[key] >= 0) continue;
            bool reachable = true;
            for (int i = 0; i < 8; i++)
            {
                levels[i] = (key >> (2 * i)) & 3;
                reachable &= levels[i] <= 2;
            }
            if (!reachable) continue;
            shellCount.Clear();
            for (int e = 0; e < Size; e++)
            {
                int d2 = 0;
                for (int i = 0; i < 8; i++)
                {
                    int diff = Levels[8 * e + i] - levels[i];
                    d2 += diff * diff;
                }
                distance[e] = d2;
                shellCount[d2]++;
            }
            // The nearestShells smallest distinct distances bound the list, as ggml's sorted scan does.
            int limit = -1, shells = 0;
            for (int d2 = 0; d2 < shellCount.Length && shells < nearestShells; d2++)
                if (shellCount[d2] > 0) { limit = d2; shells++; }
            int start = neighbours.Count;
            neighbours.Add(0);
            for (int d2 = 0; d2 <= limit; d2++)
            {
                if (shellCount[d2] == 0) continue;
                for (int e = 0; e < Size; e++)
                    if (distance[e] == d2) neighbours.Add((ushort)e);
            }
            neighbours[start] = (ushort)(neighbours.Count - start - 1);
            _map[key] = -(start + 1);
        }
        _neighbours = [.. neighbours];
    }

    private static int Iq2Levels(byte value) => value switch { 0x08 => 0, 0x19 => 1, 0x2b => 2, _ => -1 };

    private static int Iq1Levels(byte value) => (sbyte)value + 1;

    /// <summary>Packs eight levels (0..2) into a key.</summary>
    public static int Key(ReadOnlySpan<sbyte> levels)
    {
        int key = 0;
        for (int i = 0; i < 8; i++) key |= levels[i] << (2 * i);
        return key;
    }

    /// <summary>The grid entry of <paramref name="key"/>, or -1 when the key is off the grid.</summary>
    public int Entry(int key) => _map[key] >= 0 ? _map[key] : -1;

    /// <summary>Grid entries nearest to an off-grid key.</summary>
    public ReadOnlySpan<ushort> NeighboursOf(int key)
    {
        int start = -_map[key] - 1;
        return _neighbours.AsSpan(start + 1, _neighbours[start]);
    }

    public ReadOnlySpan<sbyte> LevelsOf(int entry) => Levels.AsSpan(8 * entry, 8);
}
