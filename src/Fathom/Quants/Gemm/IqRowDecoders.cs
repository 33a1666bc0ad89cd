using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats;
using Fathom.Quants.Formats.LowBitIq;

namespace Fathom.Quants.Gemm;

/// <summary>
/// IQ2_XXS rows as integers: each 32-value group is four grid rows (bytes 8, 25, 43) with signs from the 7-bit
/// ksigns indices, its scale 2·s+1 from the top four bits of the group's second word, and d/8 per super-block
/// (ggml's dequantize_row_iq2_xxs: d·(0.5 + s)·0.25·grid·sign).
/// </summary>
internal readonly unsafe struct Iq2xxsRowDecoder : IRowDecoder
{
    private const int BlockBytes = 66;

    public static void Decode(byte* row, int superBlocks, sbyte* values, short* groupScales, float* blockScales)
    {
        ulong* grid = IqKernelTables.Iq2xxsGrid;
        ulong* negate = IqKernelTables.EvenSignsMask;
        for (int i = 0; i < superBlocks; i++, row += BlockBytes)
        {
            blockScales[i] = 0.125f * Fp16.Table[*(ushort*)row];
            byte* group = row + 2;
            for (int ib = 0; ib < 8; ib++, group += 8, values += 32)
            {
                uint s = Unsafe.ReadUnaligned<uint>(group + 4);
                groupScales[8 * i + ib] = (short)(2 * (s >> 28) + 1);
                Vector256<sbyte> v = Vector256.Create(grid[group[0]], grid[group[1]], grid[group[2]], grid[group[3]]).AsSByte();
                Vector256<sbyte> m = Vector256.Create(negate[s & 127], negate[(s >> 7) & 127], negate[(s >> 14) & 127], negate[(s >> 21) & 127]).AsSByte();
                ((v ^ m) - m).Store(values); // m = −1 negates, m = 0 keeps
            }
        }
    }
}

/// <summary>
/// IQ1_S rows as integers: value = d·(2·s+1)·(g ± 1/8) with grid bytes g ∈ {−1, 0, 1}, stored as 8·g ± 1 (so
/// d/8 per super-block) with the delta's sign from bit 15 of the group's high word, as ggml's dequantize_row_iq1_s.
/// </summary>
internal readonly unsafe struct Iq1sRowDecoder : IRowDecoder
{
    private const int BlockBytes = 50;
    private const int HighBitsOffset = 34;

    public static void Decode(byte* row, int superBlocks, sbyte* values, short* groupScales, float* blockScales)
    {
        ulong* grid = IqKernelTables.Iq1Grid;
        Vector256<byte> keepHigh5 = Vector256.Create((byte)0xF8);
        for (int i = 0; i < superBlocks; i++, row += BlockBytes)
        {
            blockScales[i] = 0.125f * Fp16.Table[*(ushort*)row];
            byte* qs = row + 2;
            ushort* qh = (ushort*)(row + HighBitsOffset);
            for (int ib = 0; ib < 8; ib++, qs += 4, values += 32)
            {
                int h = qh[ib];
                groupScales[8 * i + ib] = (short)(2 * ((h >> 12) & 7) + 1);
                Vector256<byte> g = Vector256.Create(grid[qs[0] | ((h & 7) << 8)], grid[qs[1] | (((h >> 3) & 7) << 8)],
                    grid[qs[2] | (((h >> 6) & 7) << 8)], grid[qs[3] | (((h >> 9) & 7) << 8)]).AsByte();
                // 8·g per byte: a 16-bit shift, with the bits that crossed from the neighbouring byte masked off.
                Vector256<byte> eight = Avx2.ShiftLeftLogical(g.AsUInt16(), 3).AsByte() & keepHigh5;
                Vector256<sbyte> delta = Vector256.Create((sbyte)((h & 0x8000) != 0 ? -1 : 1));
                (eight.AsSByte() + delta).Store(values);
            }
        }
    }
}
