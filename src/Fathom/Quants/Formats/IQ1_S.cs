using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats.LowBitIq;
using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats;

/// <summary>
/// IQ1_S, 1.5625 bits per weight: <c>half d; uint8 qs[32]; uint16 qh[8]</c>. Each 8 values are one entry of the
/// 2048-entry ternary grid (8 bits in qs, 3 in qh); each 32 values share qh's top bits: a 3-bit scale l (bits 12-14)
/// and the sign of delta (bit 15). A value is d·(2l+1)·(grid ± 1/8).
/// </summary>
public sealed unsafe class IQ1_SFormat : WeightFormat
{
    internal const int BlockBytes = 50;
    private const int HighBitsOffset = 34;

    public override GgmlType Type => GgmlType.IQ1_S;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override bool RequiresImportance => true;
    public override IReadOnlyList<KernelPath> ImplementedPaths => IqFormatKernels<Iq1sKernels>.Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => IqFormatKernels<Iq1sKernels>.Dequantize(blocks, values);

    internal static void DequantizeAvx2(byte* x, float* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq1Grid;
        float delta = QuantTables.Iq1sDelta;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += 256)
        {
            float d = Fp16.ToSingle(*(ushort*)x);
            ushort* qh = (ushort*)(x + HighBitsOffset);
            for (int ib = 0; ib < 8; ib++)
            {
                int h = qh[ib];
                Vector256<float> dl = Vector256.Create(d * (2 * ((h >> 12) & 7) + 1));
                float shift = (h & 0x8000) != 0 ? -delta : delta;
                for (int l = 0; l < 4; l++)
                    IqRunsAvx2.StoreShifted(y + 32 * ib + 8 * l, grid + (x[2 + 4 * ib + l] | (((h >> (3 * l)) & 7) << 8)), shift, dl);
            }
        }
    }

    /// <summary>The plain reference decoder, as ggml's dequantize_row; the AVX2 decoder is tested against it.</summary>
    internal static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(GgmlTypes.Layout(GgmlType.IQ1_S), values.Length, blocks.Length);
        ulong[] grid = QuantTables.Iq1sGrid;
        float delta = QuantTables.Iq1sDelta;
        for (int i = 0; i < nb; i++)
        {
            ReadOnlySpan<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            Span<float> y = values.Slice(i * 256, 256);
            float d = Fp16.ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(block));
            for (int ib = 0; ib < 8; ib++)
            {
                int h = BinaryPrimitives.ReadUInt16LittleEndian(block[(HighBitsOffset + 2 * ib)..]);
                float dl = d * (2 * ((h >> 12) & 7) + 1);
                float shift = (h & 0x8000) != 0 ? -delta : delta;
                for (int l = 0; l < 4; l++)
                {
                    ulong g = grid[block[2 + 4 * ib + l] | (((h >> (3 * l)) & 7) << 8)];
                    for (int j = 0; j < 8; j++) y[32 * ib + 8 * l + j] = dl * ((sbyte)(byte)(g >> (8 * j)) + shift);
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Quantize(GgmlTypes.Layout(GgmlType.IQ1_S), values, blocks.Length, importance);
        IqGridIndex grid = IqGridIndex.Iq1;
        int zeroEntry = Iq1TernaryQuantizer.ZeroEntry(grid);
        float delta = QuantTables.Iq1sDelta;
        ReadOnlySpan<float> plus = [-1 + delta, delta, 1 + delta];
        ReadOnlySpan<float> minus = [-1 - delta, -delta, 1 - delta];
        Span<float> weight = stackalloc float[32], keys = stackalloc float[32], sumx = stackalloc float[33], sumw = stackalloc float[33];
        Span<float> scales = stackalloc float[8];
        Span<int> order = stackalloc int[32], entries = stackalloc int[4];
        Span<sbyte> levels = stackalloc sbyte[32];
        Span<bool> negative = stackalloc bool[8];
        for (int ibl = 0; ibl < nb; ibl++)
        {
            ReadOnlySpan<float> x = values.Slice(256 * ibl, 256);
            ReadOnlySpan<float> qw = importance.IsEmpty ? default : importance.Slice(256 * ibl, 256);
            Span<byte> y = blocks.Slice(BlockBytes * ibl, BlockBytes);
            y.Clear();
            float sigma2 = 0;
            foreach (float v in x) sigma2 += v * v;
            sigma2 = 2 * sigma2 / 256;
            float maxScale = 0;
            for (int ib = 0; ib < 8; ib++)
            {
                ReadOnlySpan<float> xb = x.Slice(32 * ib, 32);
                Iq1TernaryQuantizer.Weights(xb, qw.IsEmpty ? default : qw.Slice(32 * ib, 32), sigma2, weight);
                float max = 0;
                foreach (float v in xb) max = MathF.Max(max, MathF.Abs(v));
                if (max < 1e-12f)
                {
                    scales[ib] = 0;
                    negative[ib] = false;
                    entries.Fill(zeroEntry);
                    Store(y, ib, entries);
                    continue;
                }
                Iq1TernaryQuantizer.SortedOrder(xb, order, keys);
                sumx[0] = sumw[0] = 0;
                for (int j = 0; j < 32; j++)
                {
                    int i = order[j];
                    sumx[j + 1] = sumx[j] + weight[i] * xb[i];
                    sumw[j + 1] = sumw[j] + weight[i];
                }
                // Values below cut i1 take level -1, from i1 to i2 level 0, the rest level 1; try both delta signs.
                float best = -float.MaxValue, scale = max;
                int bestI1 = 0, bestI2 = 0;
                bool bestNegative = false;
                for (int i1 = 0; i1 <= 32; i1++)
                {
                    for (int i2 = i1; i2 <= 32; i2++)
                    {
                        float sx0 = sumx[i1], sx1 = sumx[i2] - sumx[i1], sx2 = sumx[32] - sumx[i2];
                        float sw0 = sumw[i1], sw1 = sumw[i2] - sumw[i1], sw2 = sumw[32] - sumw[i2];
                        float sumqx = sx0 * plus[0] + sx1 * plus[1] + sx2 * plus[2];
                        float sumq2 = sw0 * plus[0] * plus[0] + sw1 * plus[1] * plus[1] + sw2 * plus[2] * plus[2];
                        if (sumq2 > 0 && sumqx * sumqx > best * sumq2)
                        {
                            scale = sumqx / sumq2; best = scale * sumqx;
                            bestI1 = i1; bestI2 = i2; bestNegative = false;
                        }
                        sumqx = sx0 * minus[0] + sx1 * minus[1] + sx2 * minus[2];
                        sumq2 = sw0 * minus[0] * minus[0] + sw1 * minus[1] * minus[1] + sw2 * minus[2] * minus[2];
                        if (sumq2 > 0 && sumqx * sumqx > best * sumq2)
                        {
                            scale = sumqx / sumq2; best = scale * sumqx;
                            bestI1 = i1; bestI2 = i2; bestNegative = true;
                        }
                    }
                }
                for (int j = 0; j < 32; j++) levels[order[j]] = (sbyte)(j < bestI1 ? 0 : j < bestI2 ? 1 : 2);
                if (scale < 0)
                {
                    for (int j = 0; j < 32; j++) levels[j] = (sbyte)(2 - levels[j]);
                    scale = -scale;
                    bestNegative = !bestNegative;
                }
                ReadOnlySpan<float> shifted = bestNegative ? minus : plus;
                bool allOnGrid = true;
                for (int k = 0; k < 4; k++)
                {
                    entries[k] = Iq1TernaryQuantizer.EntryFor(grid, levels.Slice(8 * k, 8), xb.Slice(8 * k, 8), weight.Slice(8 * k, 8), scale, shifted, out bool onGrid);
                    allOnGrid &= onGrid;
                }
                if (!allOnGrid)
                {
                    float sumqx = 0, sumq2 = 0;
                    for (int i = 0; i < 32; i++)
                    {
                        float q = shifted[levels[i]];
                        sumqx += weight[i] * q * xb[i];
                        sumq2 += weight[i] * q * q;
                    }
                    if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
                }
                Store(y, ib, entries);
                scales[ib] = scale;
                negative[ib] = bestNegative;
                maxScale = MathF.Max(maxScale, scale);
            }
            if (maxScale == 0)
            {
                y.Clear();
                continue;
            }
            float d = maxScale / 15;
            BinaryPrimitives.WriteUInt16LittleEndian(y, Fp16.FromSingle(d * 1.125f));
            float id = 1 / d;
            for (int ib = 0; ib < 8; ib++)
            {
                int code = Iq2LatticeQuantizer.ScaleCode(scales[ib], id, 7) | (negative[ib] ? 8 : 0);
                Span<byte> qh = y.Slice(HighBitsOffset + 2 * ib, 2);
                BinaryPrimitives.WriteUInt16LittleEndian(qh, (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(qh) | (code << 12)));
            }
        }
    }

    private static void Store(Span<byte> y, int ib, ReadOnlySpan<int> entries)
    {
        int h = 0;
        for (int k = 0; k < 4; k++)
        {
            y[2 + 4 * ib + k] = (byte)entries[k];
            h |= (entries[k] >> 8) << (3 * k);
        }
        BinaryPrimitives.WriteUInt16LittleEndian(y[(HighBitsOffset + 2 * ib)..], (ushort)h);
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        IqFormatKernels<Iq1sKernels>.Dot(weights, activations, n, path);

    internal override float DotUnchecked(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        IqFormatKernels<Iq1sKernels>.DotUnchecked(weights, activations, n, path);

    internal static float DotScalar(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq1Grid;
        float delta = QuantTables.Iq1sDelta;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            short* bsums = (short*)(y + Q8KLayout.SumsOffset);
            byte* qs = x + 2;
            ushort* qh = (ushort*)(x + HighBitsOffset);
            int sumi = 0, sumi1 = 0;
            for (int ib = 0; ib < 8; ib++, qs += 4)
            {
                int h = qh[ib];
                int ls = 2 * ((h >> 12) & 7) + 1;
                int sign = (h & 0x8000) != 0 ? -1 : 1;
                int lsum = 0;
                for (int l = 0; l < 4; l++, q8 += 8)
                {
                    sbyte* g = (sbyte*)(grid + (qs[l] | (((h >> (3 * l)) & 7) << 8)));
                    for (int j = 0; j < 8; j++) lsum += q8[j] * g[j];
                }
                sumi += ls * lsum;
                sumi1 += ls * sign * (bsums[2 * ib] + bsums[2 * ib + 1]);
            }
            sumf += Fp16.ToSingle(*(ushort*)x) * *(float*)y * (sumi + delta * sumi1);
        }
        return sumf;
    }

    /// <summary>Vector128 only: ternary grid rows times activations widened to int16; the delta term from Q8_K's block sums.</summary>
    internal static float DotPortable(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq1Grid;
        float delta = QuantTables.Iq1sDelta;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            short* bsums = (short*)(y + Q8KLayout.SumsOffset);
            byte* qs = x + 2;
            ushort* qh = (ushort*)(x + HighBitsOffset);
            Vector128<int> sumi = Vector128<int>.Zero;
            int sumi1 = 0;
            for (int ib = 0; ib < 8; ib++, qs += 4, q8 += 32)
            {
                int h = qh[ib];
                int ls = 2 * ((h >> 12) & 7) + 1;
                Vector128<short> products =
                    SignedProducts(Vector128.Create(grid[qs[0] | ((h << 8) & 0x700)], grid[qs[1] | ((h << 5) & 0x700)]), q8)
                    + SignedProducts(Vector128.Create(grid[qs[2] | ((h << 2) & 0x700)], grid[qs[3] | ((h >> 1) & 0x700)]), q8 + 16);
                (Vector128<int> lo, Vector128<int> hi) = Vector128.Widen(products);
                sumi += (lo + hi) * ls;
                sumi1 += ls * ((h & 0x8000) != 0 ? -1 : 1) * (bsums[2 * ib] + bsums[2 * ib + 1]);
            }
            sumf += Fp16.ToSingle(*(ushort*)x) * *(float*)y * (Vector128.Sum(sumi) + delta * sumi1);
        }
        return sumf;
    }

    /// <summary>Sixteen products of signed grid bytes with activations, pairwise summed into eight int16 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<short> SignedProducts(Vector128<ulong> grid, sbyte* q8)
    {
        (Vector128<short> qlo, Vector128<short> qhi) = Vector128.Widen(Vector128.Load(q8));
        (Vector128<short> glo, Vector128<short> ghi) = Vector128.Widen(grid.AsSByte());
        return glo * qlo + ghi * qhi;
    }

    /// <summary>
    /// AVX2. With u = grid + 1 ∈ {0, 1, 2} stored as unsigned bytes, 8·Σ q·(grid ± 1/8) = 8·Σ q·u + (±1 - 8)·Σ q, so
    /// each group is one vpmaddubsw (no sign fix-ups) and the whole delta-and-offset term of a block is one vpmaddwd
    /// of Q8_K's sixteen block sums with per-group coefficients computed in SIMD from qh.
    /// </summary>
    internal static float DotAvx2(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq1Unsigned;
        Vector256<float> acc = Vector256<float>.Zero;
        Vector128<short> scaleMask = Vector128.Create((short)0xE), one = Vector128.Create((short)1), minusSeven = Vector128.Create((short)-7);
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            byte* qs = x + 2;
            ushort* qh = (ushort*)(x + HighBitsOffset);
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);

            // Coefficients ls·(s - 8) per 32-group (s = ±1 the delta sign), doubled up to match pairs of 16-value sums.
            Vector128<short> h = Sse2.LoadVector128((short*)qh);
            Vector128<short> ls = Sse2.Or(Sse2.And(Sse2.ShiftRightLogical(h, 11), scaleMask), one);
            Vector128<short> coef = Sse2.MultiplyLow(ls, Sse2.Add(minusSeven, Sse2.ShiftLeftLogical(Sse2.ShiftRightArithmetic(h, 15), 1)));
            Vector256<short> coefPairs = Vector256.Create(Sse2.UnpackLow(coef, coef), Sse2.UnpackHigh(coef, coef));
            Vector256<int> sumi = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(y + Q8KLayout.SumsOffset)), coefPairs);

            // 8·ls = 16·((h >> 12) & 7) + 8 of all eight groups in both 128-bit lanes; one vpshufb per group spreads its own.
            Vector256<short> scales8 = Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(Avx2.BroadcastVector128ToVector256((short*)qh), 8), Vector256.Create((short)0x70)), Vector256.Create((short)8));
            Vector256<int> groups = Avx2.Add(
                Avx2.Add(Avx2.Add(Group(grid, qs, qh, q8, scales8, 0), Group(grid, qs, qh, q8, scales8, 1)),
                    Avx2.Add(Group(grid, qs, qh, q8, scales8, 2), Group(grid, qs, qh, q8, scales8, 3))),
                Avx2.Add(Avx2.Add(Group(grid, qs, qh, q8, scales8, 4), Group(grid, qs, qh, q8, scales8, 5)),
                    Avx2.Add(Group(grid, qs, qh, q8, scales8, 6), Group(grid, qs, qh, q8, scales8, 7))));
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(Avx2.Add(sumi, groups)), acc);
        }
        return 0.125f * KQuantVector.HorizontalSum(acc);
    }

    /// <summary>One 32-value group: Σ (grid+1)·q8 by vpmaddubsw, times 8·ls picked from <paramref name="scales8"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Group(ulong* grid, byte* qs, ushort* qh, sbyte* q8, Vector256<short> scales8, int ib)
    {
        Vector256<short> dot = Avx2.MultiplyAddAdjacent(GridRows(grid, qs, qh, ib), Avx.LoadVector256(q8 + 32 * ib));
        return Avx2.MultiplyAddAdjacent(dot, GroupScale(scales8, ib));
    }

    /// <summary>The four unsigned grid rows (grid + 1) of group <paramref name="ib"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> GridRows(ulong* grid, byte* qs, ushort* qh, int ib)
    {
        uint h = qh[ib];
        byte* q = qs + 4 * ib;
        return Vector256.Create(grid[q[0] | ((h << 8) & 0x700)], grid[q[1] | ((h << 5) & 0x700)],
            grid[q[2] | ((h << 2) & 0x700)], grid[q[3] | ((h >> 1) & 0x700)]).AsByte();
    }

    /// <summary>8·ls of group <paramref name="ib"/> in every int16 lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> GroupScale(Vector256<short> scales8, int ib) =>
        Avx2.Shuffle(scales8.AsByte(), Vector256.Create((ushort)(0x8000 | (2 * ib))).AsByte()).AsInt16();

    /// <summary>AVX-512: as <see cref="DotAvx2"/>, with two groups (64 values) per 512-bit multiply.</summary>
    internal static float DotAvx512(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq1Unsigned;
        Vector256<float> acc = Vector256<float>.Zero;
        Vector128<short> scaleMask = Vector128.Create((short)0xE), one = Vector128.Create((short)1), minusSeven = Vector128.Create((short)-7);
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            byte* qs = x + 2;
            ushort* qh = (ushort*)(x + HighBitsOffset);
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            Vector128<short> h = Sse2.LoadVector128((short*)qh);
            Vector128<short> ls = Sse2.Or(Sse2.And(Sse2.ShiftRightLogical(h, 11), scaleMask), one);
            Vector128<short> coef = Sse2.MultiplyLow(ls, Sse2.Add(minusSeven, Sse2.ShiftLeftLogical(Sse2.ShiftRightArithmetic(h, 15), 1)));
            Vector256<short> coefPairs = Vector256.Create(Sse2.UnpackLow(coef, coef), Sse2.UnpackHigh(coef, coef));
            Vector256<int> sumi = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(y + Q8KLayout.SumsOffset)), coefPairs);
            Vector256<short> scales8 = Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(Avx2.BroadcastVector128ToVector256((short*)qh), 8), Vector256.Create((short)0x70)), Vector256.Create((short)8));
            Vector512<int> groups = (GroupPair(grid, qs, qh, q8, scales8, 0) + GroupPair(grid, qs, qh, q8, scales8, 2))
                + (GroupPair(grid, qs, qh, q8, scales8, 4) + GroupPair(grid, qs, qh, q8, scales8, 6));
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(Avx2.Add(sumi, Int8SimdWide.Fold(groups))), acc);
        }
        return 0.125f * KQuantVector.HorizontalSum(acc);
    }

    /// <summary>Groups ib (low half) and ib+1 (high half) in one 512-bit vpmaddubsw and vpmaddwd.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> GroupPair(ulong* grid, byte* qs, ushort* qh, sbyte* q8, Vector256<short> scales8, int ib)
    {
        Vector512<byte> u = Vector512.Create(GridRows(grid, qs, qh, ib), GridRows(grid, qs, qh, ib + 1));
        Vector512<short> dot = Int8SimdWide.MultiplyAddAdjacent(u, Vector512.Load(q8 + 32 * ib));
        return Int8SimdWide.MultiplyAddAdjacent(dot, Vector512.Create(GroupScale(scales8, ib), GroupScale(scales8, ib + 1)));
    }
}

/// <summary>IQ1_S's kernels for <see cref="IqFormatKernels{TKernels}"/>.</summary>
internal readonly unsafe struct Iq1sKernels : IIqKernels
{
    public static GgmlType Type => GgmlType.IQ1_S;
    public static int BlockBytes => IQ1_SFormat.BlockBytes;
    public static bool HasAvx512 => true;
    public static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values) => IQ1_SFormat.DequantizeScalar(blocks, values);
    public static void DequantizeAvx2(byte* blocks, float* values, int blockCount) => IQ1_SFormat.DequantizeAvx2(blocks, values, blockCount);
    public static float DotScalar(byte* weights, byte* activations, int blockCount) => IQ1_SFormat.DotScalar(weights, activations, blockCount);
    public static float DotPortable(byte* weights, byte* activations, int blockCount) => IQ1_SFormat.DotPortable(weights, activations, blockCount);
    public static float DotAvx2(byte* weights, byte* activations, int blockCount) => IQ1_SFormat.DotAvx2(weights, activations, blockCount);
    public static float DotAvx512(byte* weights, byte* activations, int blockCount) => IQ1_SFormat.DotAvx512(weights, activations, blockCount);
}
