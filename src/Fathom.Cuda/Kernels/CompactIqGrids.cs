using Fathom.Quants.Tables;

namespace Fathom.Cuda.Kernels;

/// <summary>
/// The IQ1_S and IQ2_XXS grids in the four bytes per entry that Kernels/matvec_iq.cu copies into shared memory (ggml's
/// tables hold eight bytes per entry): IQ1_S's values −1, 0, +1 as v + 1 in nibbles (8 KB), IQ2_XXS's three levels as
/// nibble selectors for <c>__byte_perm</c> (1 KB).
/// </summary>
public static class CompactIqGrids
{
    /// <summary>IQ1_S's grid (<see cref="Iq1sNibbles"/> of ggml's <c>iq1s_grid</c>), as uploaded to <c>fathom_iq1s_grid_nibbles</c>.</summary>
    internal static uint[] Iq1s => LazyIq1s.Value;

    /// <summary>IQ2_XXS's levels and selectors (<see cref="Iq2xxsSelectors"/> of ggml's <c>iq2xxs_grid</c>).</summary>
    internal static (uint Levels, uint[] Selectors) Iq2xxs => LazyIq2xxs.Value;

    /// <summary>ggml's <c>iq1s_grid</c> and <c>iq2xxs_grid</c>, for tests that check the packing against them.</summary>
    internal static ulong[] Iq1sSource => QuantTables.Iq1sGrid;

    internal static ulong[] Iq2xxsSource => QuantTables.Iq2xxsGrid;

    private static readonly Lazy<uint[]> LazyIq1s = new(() => Iq1sNibbles(QuantTables.Iq1sGrid));
    private static readonly Lazy<(uint, uint[])> LazyIq2xxs = new(() => Iq2xxsSelectors(QuantTables.Iq2xxsGrid));

    /// <summary>
    /// Each entry's eight signed bytes (−1, 0 or +1) as value + 1 in a nibble: value j (0–3) in the low nibble of byte j,
    /// value j + 4 in its high nibble, so <c>g &amp; 0x0F0F0F0F</c> and <c>(g &gt;&gt; 4) &amp; 0x0F0F0F0F</c> are the
    /// two halves as bytes for <c>__dp4a</c>.
    /// </summary>
    public static uint[] Iq1sNibbles(ReadOnlySpan<ulong> grid)
    {
        var packed = new uint[grid.Length];
        for (int i = 0; i < grid.Length; i++)
        {
            uint word = 0;
            for (int j = 0; j < 8; j++)
            {
                int value = (sbyte)(byte)(grid[i] >> (8 * j));
                if (value is < -1 or > 1) throw new ArgumentException($"IQ1_S grid entry {i} holds {value}, outside −1..1", nameof(grid));
                word |= (uint)(value + 1) << (8 * (j & 3) + 4 * (j >> 2));
            }
            packed[i] = word;
        }
        return packed;
    }

    /// <summary>
    /// The grid's distinct byte values (at most four, ascending) as the bytes of <c>Levels</c>, and each entry's eight
    /// bytes as level indices, byte j in nibble j: <c>__byte_perm(Levels, 0, s &amp; 0xFFFF)</c> and
    /// <c>__byte_perm(Levels, 0, s &gt;&gt; 16)</c> give the entry's two halves.
    /// </summary>
    public static (uint Levels, uint[] Selectors) Iq2xxsSelectors(ReadOnlySpan<ulong> grid)
    {
        var levels = new SortedSet<byte>();
        foreach (ulong entry in grid)
            for (int j = 0; j < 8; j++) levels.Add((byte)(entry >> (8 * j)));
        if (levels.Count > 4) throw new ArgumentException($"the IQ2_XXS grid holds {levels.Count} distinct values; a selector word takes at most 4", nameof(grid));
        byte[] ordered = [.. levels];
        uint levelWord = 0;
        for (int k = 0; k < ordered.Length; k++) levelWord |= (uint)ordered[k] << (8 * k);
        var selectors = new uint[grid.Length];
        for (int i = 0; i < grid.Length; i++)
        {
            uint word = 0;
            for (int j = 0; j < 8; j++) word |= (uint)Array.IndexOf(ordered, (byte)(grid[i] >> (8 * j))) << (4 * j);
            selectors[i] = word;
        }
        return (levelWord, selectors);
    }
}
