using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats.LowBitIq;
using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats;

/// <summary>
/// IQ2_XXS, 2.0625 bits per weight: <c>half d; uint16 qs[32]</c>. Each 32-element group takes 8 bytes: four 8-bit
/// indices into the 256-entry grid, then a uint32 of four 7-bit sign indices (ksigns_iq2xs completes even parity)
/// and a 4-bit scale l in the top bits; a value is d·(0.5 + l)/4 · grid · sign.
/// </summary>
public sealed unsafe class IQ2_XXSFormat : WeightFormat
{
    internal const int BlockBytes = 66;

    public override GgmlType Type => GgmlType.IQ2_XXS;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override bool RequiresImportance => true;
    public override IReadOnlyList<KernelPath> ImplementedPaths => IqFormatKernels<Iq2xxsKernels>.Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => IqFormatKernels<Iq2xxsKernels>.Dequantize(blocks, values);

    internal static void DequantizeAvx2(byte* x, float* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2xxsGrid, masks = IqKernelTables.EvenSignsMask;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += 256)
        {
            float d = Fp16.ToSingle(*(ushort*)x);
            for (int ib = 0; ib < 8; ib++)
            {
                byte* group = x + 2 + 8 * ib;
                uint s = Unsafe.ReadUnaligned<uint>(group + 4);
                Vector256<float> db = Vector256.Create(d * (0.5f + (s >> 28)) * 0.25f);
                for (int l = 0; l < 4; l++)
                    IqRunsAvx2.StoreSigned(y + 32 * ib + 8 * l, grid + group[l], masks + ((s >> (7 * l)) & 127), db);
            }
        }
    }

    /// <summary>The plain reference decoder, as ggml's dequantize_row; the AVX2 decoder is tested against it.</summary>
    internal static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(GgmlTypes.Layout(GgmlType.IQ2_XXS), values.Length, blocks.Length);
        ulong[] grid = QuantTables.Iq2xxsGrid;
        byte[] ksigns = QuantTables.KsignsIq2xs;
        for (int i = 0; i < nb; i++)
        {
            ReadOnlySpan<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            Span<float> y = values.Slice(i * 256, 256);
            float d = Fp16.ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(block));
            for (int ib = 0; ib < 8; ib++)
            {
                ReadOnlySpan<byte> group = block.Slice(2 + 8 * ib, 8);
                uint signsAndScale = BinaryPrimitives.ReadUInt32LittleEndian(group[4..]);
                float db = d * (0.5f + (signsAndScale >> 28)) * 0.25f;
                for (int l = 0; l < 4; l++)
                {
                    ulong g = grid[group[l]];
                    byte signs = ksigns[(signsAndScale >> (7 * l)) & 127];
                    for (int j = 0; j < 8; j++)
                        y[32 * ib + 8 * l + j] = db * (byte)(g >> (8 * j)) * ((signs >> j & 1) != 0 ? -1f : 1f);
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance) =>
        Iq2BlockEncoder<Iq2xxsLayout>.Quantize(GgmlType.IQ2_XXS, values, blocks, importance);

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        IqFormatKernels<Iq2xxsKernels>.Dot(weights, activations, n, path);

    internal override float DotUnchecked(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        IqFormatKernels<Iq2xxsKernels>.DotUnchecked(weights, activations, n, path);

    internal static float DotScalar(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2xxsGrid;
        byte[] ksigns = QuantTables.KsignsIq2xs;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            int bsum = 0;
            for (int ib = 0; ib < 8; ib++)
            {
                byte* group = x + 2 + 8 * ib;
                uint signsAndScale = Unsafe.ReadUnaligned<uint>(group + 4);
                int ls = 2 * (int)(signsAndScale >> 28) + 1;
                int sumi = 0;
                for (int l = 0; l < 4; l++, q8 += 8)
                {
                    byte* g = (byte*)(grid + group[l]);
                    int signs = ksigns[(signsAndScale >> (7 * l)) & 127];
                    for (int j = 0; j < 8; j++) sumi += g[j] * q8[j] * ((signs >> j & 1) != 0 ? -1 : 1);
                }
                bsum += sumi * ls;
            }
            sumf += d * bsum;
        }
        return 0.125f * sumf;
    }

    /// <summary>Vector128 only: grid bytes and sign-flipped activations widened to int16 products.</summary>
    internal static float DotPortable(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2xxsGrid;
        ulong* masks = IqKernelTables.EvenSignsMask;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            Vector128<int> sumi = Vector128<int>.Zero;
            for (int ib = 0; ib < 8; ib++, q8 += 32)
            {
                byte* group = x + 2 + 8 * ib;
                uint s = Unsafe.ReadUnaligned<uint>(group + 4);
                Vector128<short> products =
                    Iq2PortableProducts(Vector128.Create(grid[group[0]], grid[group[1]]), Vector128.Create(masks[s & 127], masks[(s >> 7) & 127]), q8)
                    + Iq2PortableProducts(Vector128.Create(grid[group[2]], grid[group[3]]), Vector128.Create(masks[(s >> 14) & 127], masks[(s >> 21) & 127]), q8 + 16);
                (Vector128<int> lo, Vector128<int> hi) = Vector128.Widen(products);
                sumi += (lo + hi) * (2 * (int)(s >> 28) + 1);
            }
            sumf += d * Vector128.Sum(sumi);
        }
        return 0.125f * sumf;
    }

    /// <summary>Sixteen products grid·sign·q8, pairwise summed into eight int16 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<short> Iq2PortableProducts(Vector128<ulong> grid, Vector128<ulong> negateMask, sbyte* q8)
    {
        Vector128<sbyte> m = negateMask.AsSByte();
        Vector128<sbyte> q = (Vector128.Load(q8) ^ m) - m;
        (Vector128<short> qlo, Vector128<short> qhi) = Vector128.Widen(q);
        (Vector128<short> glo, Vector128<short> ghi) = Vector128.Widen(grid.AsSByte());
        return glo * qlo + ghi * qhi;
    }

    /// <summary>
    /// AVX2: per 32-element group the four grid rows and four sign patterns are gathered into 256-bit registers,
    /// vpsignb applies the signs to the activations, vpmaddubsw multiplies (grid bytes are unsigned) and vpmaddwd
    /// applies the group scale; one FMA per block folds in the block scales.
    /// </summary>
    internal static float DotAvx2(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2xxsGrid;
        ulong* signs = IqKernelTables.EvenSignsPlusMinusOne;
        Vector256<float> acc = Vector256<float>.Zero;
        // vpshufb controls that spread the low byte of dword 1 (group 0 of a pair) or dword 3 (group 1) over all int16 lanes.
        Vector256<byte> firstScale = Vector256.Create((ushort)0x8004).AsByte(), secondScale = Vector256.Create((ushort)0x800c).AsByte();
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            byte* q2 = x + 2;
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            // Fully unrolled: eight independent groups the out-of-order core can overlap. The group scales 2l+1 of a
            // pair of groups come from one broadcast load ((w >> 27) | 1 == 2·(w >> 28) + 1 for the scale word w)
            // and reach each group's int16 lanes with one vpshufb, instead of a broadcast from a general register.
            Vector256<int> sum = Avx2.Add(
                Avx2.Add(Pair(grid, signs, q2, q8, 0, firstScale, secondScale), Pair(grid, signs, q2, q8, 1, firstScale, secondScale)),
                Avx2.Add(Pair(grid, signs, q2, q8, 2, firstScale, secondScale), Pair(grid, signs, q2, q8, 3, firstScale, secondScale)));
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(sum), acc);
        }
        return 0.125f * KQuantVector.HorizontalSum(acc);
    }

    /// <summary>
    /// AVX-512: as <see cref="DotAvx2"/>, with both groups of a pair in one 512-bit multiply. AVX-512 has no vpsignb,
    /// so the signs come as 0/0xFF masks and are applied to the activations as (q ^ m) − m.
    /// </summary>
    internal static float DotAvx512(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2xxsGrid;
        ulong* masks = IqKernelTables.EvenSignsMask;
        Vector256<float> acc = Vector256<float>.Zero;
        Vector256<byte> firstScale = Vector256.Create((ushort)0x8004).AsByte(), secondScale = Vector256.Create((ushort)0x800c).AsByte();
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            byte* q2 = x + 2;
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            Vector512<int> sum = (Pair512(grid, masks, q2, q8, 0, firstScale, secondScale) + Pair512(grid, masks, q2, q8, 1, firstScale, secondScale))
                + (Pair512(grid, masks, q2, q8, 2, firstScale, secondScale) + Pair512(grid, masks, q2, q8, 3, firstScale, secondScale));
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(Int8SimdWide.Fold(sum)), acc);
        }
        return 0.125f * KQuantVector.HorizontalSum(acc);
    }

    /// <summary>Groups 2p (low half) and 2p+1 (high half): Σ grid·sign·q8 per int32 lane pair, times each group's scale.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Pair512(ulong* grid, ulong* masks, byte* q2, sbyte* q8, int pair, Vector256<byte> firstScale, Vector256<byte> secondScale)
    {
        Vector256<byte> scales = Avx2.Or(Avx2.ShiftRightLogical(Avx2.BroadcastVector128ToVector256((uint*)(q2 + 16 * pair)), 27), Vector256.Create(1u)).AsByte();
        byte* g0 = q2 + 16 * pair, g1 = g0 + 8;
        uint s0 = Unsafe.ReadUnaligned<uint>(g0 + 4), s1 = Unsafe.ReadUnaligned<uint>(g1 + 4);
        Vector512<byte> values = Vector512.Create(grid[g0[0]], grid[g0[1]], grid[g0[2]], grid[g0[3]],
            grid[g1[0]], grid[g1[1]], grid[g1[2]], grid[g1[3]]).AsByte();
        Vector512<sbyte> negate = Vector512.Create(masks[s0 & 127], masks[(s0 >> 7) & 127], masks[(s0 >> 14) & 127], masks[(s0 >> 21) & 127],
            masks[s1 & 127], masks[(s1 >> 7) & 127], masks[(s1 >> 14) & 127], masks[(s1 >> 21) & 127]).AsSByte();
        Vector512<short> dot = Int8SimdWide.MultiplyAddAdjacent(values, Int8SimdWide.NegateWhere(Vector512.Load(q8 + 64 * pair), negate));
        Vector512<short> scale = Vector512.Create(Avx2.Shuffle(scales, firstScale), Avx2.Shuffle(scales, secondScale)).AsInt16();
        return Int8SimdWide.MultiplyAddAdjacent(dot, scale);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Pair(ulong* grid, ulong* signs, byte* q2, sbyte* q8, int pair, Vector256<byte> firstScale, Vector256<byte> secondScale)
    {
        Vector256<byte> scales = Avx2.Or(Avx2.ShiftRightLogical(Avx2.BroadcastVector128ToVector256((uint*)(q2 + 16 * pair)), 27), Vector256.Create(1u)).AsByte();
        return Avx2.Add(
            Group(grid, signs, q2, q8, 2 * pair, Avx2.Shuffle(scales, firstScale).AsInt16()),
            Group(grid, signs, q2, q8, 2 * pair + 1, Avx2.Shuffle(scales, secondScale).AsInt16()));
    }

    /// <summary>One 32-value group: Σ grid·sign·q8 per int32 lane pair, times the group scale.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Group(ulong* grid, ulong* signs, byte* q2, sbyte* q8, int ib, Vector256<short> scale)
    {
        byte* g = q2 + 8 * ib;
        uint s = Unsafe.ReadUnaligned<uint>(g + 4);
        Vector256<byte> values = Vector256.Create(grid[g[0]], grid[g[1]], grid[g[2]], grid[g[3]]).AsByte();
        Vector256<sbyte> sign = Vector256.Create(signs[s & 127], signs[(s >> 7) & 127], signs[(s >> 14) & 127], signs[(s >> 21) & 127]).AsSByte();
        Vector256<short> dot = Avx2.MultiplyAddAdjacent(values, Avx2.Sign(Avx.LoadVector256(q8 + 32 * ib), sign));
        return Avx2.MultiplyAddAdjacent(dot, scale);
    }
}

/// <summary>
/// IQ2_XXS's super-block for <see cref="Iq2BlockEncoder{TLayout}"/>: per 32-value group two uint32 words, the four
/// 8-bit grid entries, then four 7-bit sign patterns with the 4-bit scale in the top bits.
/// </summary>
internal readonly struct Iq2xxsLayout : IIq2BlockLayout
{
    public static int GroupSize => 32;
    public static int BlockBytes => IQ2_XXSFormat.BlockBytes;
    public static IqGridIndex Grid => IqGridIndex.Iq2xxs;
    public static Iq2LatticeQuantizer.Search Search { get; } = new(Tries: 6, ReferenceFromLeastSquares: true, RequantizeAll: true);
    public static float Sigma2Factor => 1;
    public static bool EvenParity => true;
    public static float ZeroGroupThreshold => 1e-15f;
    public static float StoredScaleFactor => 1;

    public static void StoreGroup(Span<byte> block, int group, ReadOnlySpan<int> entries, ReadOnlySpan<byte> signs)
    {
        uint signWord = 0;
        for (int k = 0; k < 4; k++)
        {
            block[2 + 8 * group + k] = (byte)entries[k];
            signWord |= (uint)(signs[k] & 127) << (7 * k);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(block[(2 + 8 * group + 4)..], signWord);
    }

    public static void StoreScale(Span<byte> block, int group, int code)
    {
        Span<byte> word = block[(2 + 8 * group + 4)..];
        BinaryPrimitives.WriteUInt32LittleEndian(word, BinaryPrimitives.ReadUInt32LittleEndian(word) | (uint)code << 28);
    }
}

/// <summary>IQ2_XXS's kernels for <see cref="IqFormatKernels{TKernels}"/>.</summary>
internal readonly unsafe struct Iq2xxsKernels : IIqKernels
{
    public static GgmlType Type => GgmlType.IQ2_XXS;
    public static int BlockBytes => IQ2_XXSFormat.BlockBytes;
    public static bool HasAvx512 => true;
    public static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values) => IQ2_XXSFormat.DequantizeScalar(blocks, values);
    public static void DequantizeAvx2(byte* blocks, float* values, int blockCount) => IQ2_XXSFormat.DequantizeAvx2(blocks, values, blockCount);
    public static float DotScalar(byte* weights, byte* activations, int blockCount) => IQ2_XXSFormat.DotScalar(weights, activations, blockCount);
    public static float DotPortable(byte* weights, byte* activations, int blockCount) => IQ2_XXSFormat.DotPortable(weights, activations, blockCount);
    public static float DotAvx2(byte* weights, byte* activations, int blockCount) => IQ2_XXSFormat.DotAvx2(weights, activations, blockCount);
    public static float DotAvx512(byte* weights, byte* activations, int blockCount) => IQ2_XXSFormat.DotAvx512(weights, activations, blockCount);
}
