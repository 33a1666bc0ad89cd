using Fathom.Quants.Tables;

namespace Fathom.Cuda.Kernels;

/// <summary>
/// IQ1_S's grid in the four bytes per entry that Kernels/matvec_iq.cu copies into shared memory (ggml's table holds
/// eight): the values −1, 0, +1 as v + 1 in nibbles, 8 KB instead of 16.
/// </summary>
public static class CompactIqGrids
{
    /// <summary>IQ1_S's grid (<see cref="Iq1sNibbles"/> of ggml's <c>iq1s_grid</c>), as uploaded to <c>fathom_iq1s_grid_nibbles</c>.</summary>
    internal static uint[] Iq1s => LazyIq1s.Value;

    /// <summary>ggml's <c>iq1s_grid</c>, for tests that check the packing against it.</summary>
    internal static ulong[] Iq1sSource => QuantTables.Iq1sGrid;

    private static readonly Lazy<uint[]> LazyIq1s = new(() => Iq1sNibbles(QuantTables.Iq1sGrid));

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
}
