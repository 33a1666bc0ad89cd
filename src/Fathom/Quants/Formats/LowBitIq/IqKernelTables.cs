using System.Runtime.CompilerServices;
using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats.LowBitIq;

/// <summary>
/// ggml's IQ1/IQ2 grids and sign tables in pinned memory, plus tables derived from them that let the dot kernels
/// skip per-element work: expanded sign patterns (±1 bytes for vpsignb, 0/-1 masks for the portable path) and
/// IQ1 grids shifted to unsigned bytes so one u8×i8 multiply-add replaces the signed-product trick.
/// </summary>
internal static unsafe class IqKernelTables
{
    // First, because static fields initialize in textual order. The pinned copies must stay reachable: an
    // unreferenced array on the pinned heap is collected like any other, and the kernels would read freed memory.
    private static readonly List<ulong[]> Pinned = [];

    public static readonly ulong* Iq2xxsGrid = Pin(QuantTables.Iq2xxsGrid);
    public static readonly ulong* Iq2xsGrid = Pin(QuantTables.Iq2xsGrid);
    public static readonly ulong* Iq2sGrid = Pin(QuantTables.Iq2sGrid);
    /// <summary>IQ1 grid: eight int8 values in {-1, 0, 1} per entry.</summary>
    public static readonly ulong* Iq1Grid = Pin(QuantTables.Iq1sGrid);

    /// <summary>The 7-bit IQ2 sign index (parity completes the 8th bit, via ksigns_iq2xs) as eight bytes of +1 / -1.</summary>
    public static readonly ulong* EvenSignsPlusMinusOne = Pin(Expand(128, k => QuantTables.KsignsIq2xs[k], 0x01, 0xFF));
    /// <summary>The same signs as eight bytes of 0 (keep) / 0xFF (negate).</summary>
    public static readonly ulong* EvenSignsMask = Pin(Expand(128, k => QuantTables.KsignsIq2xs[k], 0x00, 0xFF));
    /// <summary>A full sign byte (IQ2_S) as eight bytes of 0 / 0xFF.</summary>
    public static readonly ulong* SignsMask = Pin(Expand(256, k => (byte)k, 0x00, 0xFF));

    /// <summary>IQ1_S: the grid plus one, bytes in {0, 1, 2}; the lost -1 comes back through Q8_K's block sums.</summary>
    public static readonly ulong* Iq1Unsigned = Pin(ShiftIq1(2048));

    /// <summary>
    /// IQ1_M: indexed by the 11-bit grid index plus the delta-sign bit (bit 11). Bytes hold 8·(g+1) + 1 + s with
    /// s = +1 for delta +1/8 and -1 for -1/8, so 8·(g + s/8) = byte - 9: an unsigned byte in [0, 18], the -9 comes
    /// back through Q8_K's block sums.
    /// </summary>
    public static readonly ulong* Iq1mWeighted = Pin(WeightIq1m());

    private static ulong* Pin(ulong[] values)
    {
        ulong[] pinned = GC.AllocateUninitializedArray<ulong>(values.Length, pinned: true);
        values.CopyTo(pinned, 0);
        lock (Pinned) Pinned.Add(pinned);
        return (ulong*)Unsafe.AsPointer(ref pinned[0]);
    }

    private static ulong[] Expand(int count, Func<int, byte> bits, byte clear, byte set)
    {
        var table = new ulong[count];
        for (int k = 0; k < count; k++)
        {
            byte b = bits(k);
            ulong v = 0;
            for (int j = 0; j < 8; j++) v |= (ulong)((b >> j & 1) != 0 ? set : clear) << (8 * j);
            table[k] = v;
        }
        return table;
    }

    private static ulong[] ShiftIq1(int count)
    {
        ulong[] grid = QuantTables.Iq1sGrid;
        var table = new ulong[count];
        for (int k = 0; k < count; k++)
        {
            ulong v = 0;
            for (int j = 0; j < 8; j++) v |= (ulong)(byte)((sbyte)(byte)(grid[k] >> (8 * j)) + 1) << (8 * j);
            table[k] = v;
        }
        return table;
    }

    private static ulong[] WeightIq1m()
    {
        ulong[] grid = QuantTables.Iq1sGrid;
        var table = new ulong[4096];
        for (int k = 0; k < table.Length; k++)
        {
            bool negativeDelta = (k & 2048) != 0;
            ulong v = 0;
            for (int j = 0; j < 8; j++)
            {
                int g = (sbyte)(byte)(grid[k & 2047] >> (8 * j));
                v |= (ulong)(byte)(8 * (g + 1) + (negativeDelta ? 0 : 2)) << (8 * j);
            }
            table[k] = v;
        }
        return table;
    }
}
