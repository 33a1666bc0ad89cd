using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats.LowBitIq;
using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats;

/// <summary>
/// IQ1_M, 1.75 bits per weight: <c>uint8 qs[32]; uint8 qh[16]; uint8 scales[8]</c>. Each 8 values are one entry of
/// the 2048-entry ternary grid (8 bits in qs, 3 in a qh nibble whose 4th bit is that run's delta sign); each 16
/// values have a 3-bit scale l. The four uint16 scale words carry 12 bits of scales and, in their top nibbles, the
/// fp16 block scale d. A value is d·(2l+1)·(grid ± 1/8).
/// </summary>
public sealed unsafe class IQ1_MFormat : WeightFormat
{
    internal const int BlockBytes = 56;
    private const int HighBitsOffset = 32;
    private const int ScalesOffset = 48;

    public override GgmlType Type => GgmlType.IQ1_M;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => IqFormatKernels<Iq1mKernels>.Paths;

    /// <summary>The fp16 block scale assembled from the top nibbles of the four scale words.</summary>
    private static float BlockScale(ushort* sc) =>
        Fp16.ToSingle((ushort)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000)));

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => IqFormatKernels<Iq1mKernels>.Dequantize(blocks, values);

    internal static void DequantizeAvx2(byte* x, float* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq1Grid;
        float delta = QuantTables.Iq1mDelta;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += 256)
        {
            ushort* sc = (ushort*)(x + ScalesOffset);
            float d = BlockScale(sc);
            for (int ib = 0; ib < 16; ib++)
            {
                Vector256<float> dl = Vector256.Create(d * (2 * ((sc[ib / 4] >> (3 * (ib % 4))) & 7) + 1));
                int qh = x[HighBitsOffset + ib];
                for (int k = 0; k < 2; k++)
                {
                    int nibble = qh >> (4 * k);
                    IqRunsAvx2.StoreShifted(y + 16 * ib + 8 * k, grid + (x[2 * ib + k] | ((nibble & 7) << 8)), (nibble & 8) != 0 ? -delta : delta, dl);
                }
            }
        }
    }

    /// <summary>The plain reference decoder, as ggml's dequantize_row; the AVX2 decoder is tested against it.</summary>
    internal static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(GgmlTypes.Layout(GgmlType.IQ1_M), values.Length, blocks.Length);
        ulong[] grid = QuantTables.Iq1sGrid;
        float delta = QuantTables.Iq1mDelta;
        fixed (byte* first = blocks)
        {
            for (int i = 0; i < nb; i++)
            {
                byte* x = first + i * BlockBytes;
                ushort* sc = (ushort*)(x + ScalesOffset);
                Span<float> y = values.Slice(i * 256, 256);
                float d = BlockScale(sc);
                for (int ib = 0; ib < 16; ib++)
                {
                    float dl = d * (2 * ((sc[ib / 4] >> (3 * (ib % 4))) & 7) + 1);
                    int qh = x[HighBitsOffset + ib];
                    for (int k = 0; k < 2; k++)
                    {
                        int nibble = qh >> (4 * k);
                        ulong g = grid[x[2 * ib + k] | ((nibble & 7) << 8)];
                        float shift = (nibble & 8) != 0 ? -delta : delta;
                        for (int j = 0; j < 8; j++) y[16 * ib + 8 * k + j] = dl * ((sbyte)(byte)(g >> (8 * j)) + shift);
                    }
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Quantize(GgmlTypes.Layout(GgmlType.IQ1_M), values, blocks.Length, importance);
        IqGridIndex grid = IqGridIndex.Iq1;
        int zeroEntry = Iq1TernaryQuantizer.ZeroEntry(grid);
        float delta = QuantTables.Iq1mDelta;
        ReadOnlySpan<float> plus = [-1 + delta, delta, 1 + delta];
        ReadOnlySpan<float> minus = [-1 - delta, -delta, 1 - delta];
        Span<float> weights = stackalloc float[256], keys = stackalloc float[16];
        // Prefix sums over the sorted order, kept apart for the two 8-runs since each has its own delta sign.
        Span<float> sumx = stackalloc float[2 * 17], sumw = stackalloc float[2 * 17];
        Span<float> scales = stackalloc float[16];
        Span<int> order = stackalloc int[16], entries = stackalloc int[2], shifts = stackalloc int[16];
        Span<sbyte> levels = stackalloc sbyte[16];
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
            for (int ib = 0; ib < 16; ib++)
            {
                ReadOnlySpan<float> xb = x.Slice(16 * ib, 16);
                Span<float> weight = weights.Slice(16 * ib, 16);
                Iq1TernaryQuantizer.Weights(xb, qw.IsEmpty ? default : qw.Slice(16 * ib, 16), sigma2, weight);
                float max = 0;
                foreach (float v in xb) max = MathF.Max(max, MathF.Abs(v));
                if (max < 1e-7f)
                {
                    scales[ib] = 0;
                    shifts[ib] = 0;
                    entries.Fill(zeroEntry);
                    Store(y, ib, entries);
                    continue;
                }
                Iq1TernaryQuantizer.SortedOrder(xb, order, keys);
                sumx[0] = sumw[0] = sumx[17] = sumw[17] = 0;
                for (int j = 0; j < 16; j++)
                {
                    int i = order[j];
                    bool firstRun = i < 8;
                    float wx = weight[i] * xb[i], w = weight[i];
                    sumx[j + 1] = sumx[j] + (firstRun ? wx : 0);
                    sumw[j + 1] = sumw[j] + (firstRun ? w : 0);
                    sumx[17 + j + 1] = sumx[17 + j] + (firstRun ? 0 : wx);
                    sumw[17 + j + 1] = sumw[17 + j] + (firstRun ? 0 : w);
                }
                // Shift choice k: bit 1 set = first run shifted by -delta, bit 0 set = second run by -delta.
                float best = -float.MaxValue, scale = max;
                int bestI1 = 0, bestI2 = 0, bestK = 0;
                for (int i1 = 0; i1 <= 16; i1++)
                {
                    for (int i2 = i1; i2 <= 16; i2++)
                    {
                        for (int k = 0; k < 4; k++)
                        {
                            ReadOnlySpan<float> first = k < 2 ? plus : minus, second = (k & 1) == 0 ? plus : minus;
                            float sumqx = Segments(sumx[..17], first, i1, i2) + Segments(sumx[17..], second, i1, i2);
                            float sumq2 = SquaredSegments(sumw[..17], first, i1, i2) + SquaredSegments(sumw[17..], second, i1, i2);
                            if (sumq2 > 0 && sumqx * sumqx > best * sumq2)
                            {
                                scale = sumqx / sumq2; best = scale * sumqx;
                                bestI1 = i1; bestI2 = i2; bestK = k;
                            }
                        }
                    }
                }
                for (int j = 0; j < 16; j++) levels[order[j]] = (sbyte)(j < bestI1 ? 0 : j < bestI2 ? 1 : 2);
                if (scale < 0)
                {
                    for (int j = 0; j < 16; j++) levels[j] = (sbyte)(2 - levels[j]);
                    scale = -scale;
                    bestK = 3 - bestK;
                }
                bool allOnGrid = true;
                for (int k = 0; k < 2; k++)
                {
                    ReadOnlySpan<float> shifted = Shifted(bestK, k, plus, minus);
                    entries[k] = Iq1TernaryQuantizer.EntryFor(grid, levels.Slice(8 * k, 8), xb.Slice(8 * k, 8), weight.Slice(8 * k, 8), scale, shifted, out bool onGrid);
                    allOnGrid &= onGrid;
                }
                if (!allOnGrid)
                {
                    float sumqx = 0, sumq2 = 0;
                    for (int i = 0; i < 16; i++)
                    {
                        float q = Shifted(bestK, i / 8, plus, minus)[levels[i]];
                        sumqx += weight[i] * q * xb[i];
                        sumq2 += weight[i] * q * q;
                    }
                    if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
                }
                Store(y, ib, entries);
                scales[ib] = scale;
                shifts[ib] = bestK;
                maxScale = MathF.Max(maxScale, scale);
            }
            if (maxScale == 0)
            {
                y.Clear();
                continue;
            }

            // Scale codes first, then the block scale refitted by least squares over the final codes and grid points.
            float d = maxScale / 15, id = 1 / d;
            float sumqxBlock = 0, sumq2Block = 0;
            for (int ib = 0; ib < 16; ib++)
            {
                int l = Iq2LatticeQuantizer.ScaleCode(scales[ib], id, 7);
                int word = ScalesOffset + 2 * (ib / 4);
                BinaryPrimitives.WriteUInt16LittleEndian(y[word..], (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(y[word..]) | (l << (3 * (ib % 4)))));
                y[HighBitsOffset + ib] |= (byte)(((shifts[ib] & 2) != 0 ? 0x08 : 0) | ((shifts[ib] & 1) != 0 ? 0x80 : 0));
                for (int k = 0; k < 2; k++)
                {
                    ReadOnlySpan<float> shifted = Shifted(shifts[ib], k, plus, minus);
                    int entry = y[2 * ib + k] | (((y[HighBitsOffset + ib] >> (4 * k)) & 7) << 8);
                    ReadOnlySpan<sbyte> p = grid.LevelsOf(entry);
                    for (int j = 0; j < 8; j++)
                    {
                        int i = 16 * ib + 8 * k + j;
                        float q = shifted[p[j]] * (2 * l + 1);
                        sumqxBlock += weights[i] * q * x[i];
                        sumq2Block += weights[i] * q * q;
                    }
                }
            }
            if (sumq2Block > 0) d = sumqxBlock / sumq2Block;
            ushort half = Fp16.FromSingle(d * 1.1125f);
            for (int k = 0; k < 4; k++)
            {
                int word = ScalesOffset + 2 * k;
                int bits = BinaryPrimitives.ReadUInt16LittleEndian(y[word..]) | (((half >> (4 * k)) & 0xf) << 12);
                BinaryPrimitives.WriteUInt16LittleEndian(y[word..], (ushort)bits);
            }
        }
    }

    private static ReadOnlySpan<float> Shifted(int k, int run, ReadOnlySpan<float> plus, ReadOnlySpan<float> minus) =>
        (run == 0 ? (k & 2) == 0 : (k & 1) == 0) ? plus : minus;

    private static float Segments(ReadOnlySpan<float> prefix, ReadOnlySpan<float> q, int i1, int i2) =>
        prefix[i1] * q[0] + (prefix[i2] - prefix[i1]) * q[1] + (prefix[16] - prefix[i2]) * q[2];

    private static float SquaredSegments(ReadOnlySpan<float> prefix, ReadOnlySpan<float> q, int i1, int i2) =>
        prefix[i1] * q[0] * q[0] + (prefix[i2] - prefix[i1]) * q[1] * q[1] + (prefix[16] - prefix[i2]) * q[2] * q[2];

    private static void Store(Span<byte> y, int ib, ReadOnlySpan<int> entries)
    {
        y[2 * ib] = (byte)entries[0];
        y[2 * ib + 1] = (byte)entries[1];
        y[HighBitsOffset + ib] = (byte)((entries[0] >> 8) | ((entries[1] >> 8) << 4));
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        IqFormatKernels<Iq1mKernels>.Dot(weights, activations, n, path);

    internal override float DotUnchecked(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        IqFormatKernels<Iq1mKernels>.DotUnchecked(weights, activations, n, path);

    internal static float DotScalar(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq1Grid;
        float delta = QuantTables.Iq1mDelta;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            ushort* sc = (ushort*)(x + ScalesOffset);
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            int sumi1 = 0, sumi2 = 0;
            for (int ib = 0; ib < 16; ib++)
            {
                int ls = 2 * ((sc[ib / 4] >> (3 * (ib % 4))) & 7) + 1;
                int qh = x[HighBitsOffset + ib];
                int sum1 = 0, sum2 = 0;
                for (int k = 0; k < 2; k++, q8 += 8)
                {
                    int nibble = qh >> (4 * k);
                    sbyte* g = (sbyte*)(grid + (x[2 * ib + k] | ((nibble & 7) << 8)));
                    int lsum1 = 0, lsum2 = 0;
                    for (int j = 0; j < 8; j++) { lsum1 += q8[j] * g[j]; lsum2 += q8[j]; }
                    sum1 += lsum1;
                    sum2 += (nibble & 8) != 0 ? -lsum2 : lsum2;
                }
                sumi1 += ls * sum1;
                sumi2 += ls * sum2;
            }
            sumf += BlockScale(sc) * *(float*)y * (sumi1 + delta * sumi2);
        }
        return sumf;
    }

    /// <summary>
    /// Vector128 only. Per 16 values, 8·grid·q + (±q by each run's delta sign) is formed in int16 lanes (at most
    /// 8·254 + 254 in magnitude), which is 8·Σ q·(grid ± 1/8): the delta term needs no second product.
    /// </summary>
    internal static float DotPortable(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq1Grid;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            ushort* sc = (ushort*)(x + ScalesOffset);
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            Vector128<int> sumi = Vector128<int>.Zero;
            for (int ib = 0; ib < 16; ib++, q8 += 16)
            {
                int ls = 2 * ((sc[ib / 4] >> (3 * (ib % 4))) & 7) + 1;
                int qh = x[HighBitsOffset + ib];
                (Vector128<short> q0, Vector128<short> q1) = Vector128.Widen(Vector128.Load(q8));
                (Vector128<short> g0, Vector128<short> g1) = Vector128.Widen(
                    Vector128.Create(grid[x[2 * ib] | ((qh & 7) << 8)], grid[x[2 * ib + 1] | ((qh & 0x70) << 4)]).AsSByte());
                Vector128<short> m0 = Vector128.Create((short)-((qh >> 3) & 1)), m1 = Vector128.Create((short)-((qh >> 7) & 1));
                Vector128<short> v = ((g0 * q0 + g1 * q1) << 3) + ((q0 ^ m0) - m0) + ((q1 ^ m1) - m1);
                (Vector128<int> lo, Vector128<int> hi) = Vector128.Widen(v);
                sumi += (lo + hi) * ls;
            }
            sumf += BlockScale(sc) * *(float*)y * Vector128.Sum(sumi);
        }
        return 0.125f * sumf;
    }

    /// <summary>
    /// One 32-value group: four rows of the weighted table times activations, the first 16 values scaled by int16
    /// <paramref name="ib"/> of the low lane of <paramref name="scales"/>, the second 16 by the same int16 of the high lane.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Group(ulong* table, byte* qs, byte* qh, sbyte* q8, Vector256<byte> scales, int ib)
    {
        Vector256<short> dot = Avx2.MultiplyAddAdjacent(TableRows(table, qs, qh, ib), Avx.LoadVector256(q8 + 32 * ib));
        return Avx2.MultiplyAddAdjacent(dot, GroupScales(scales, ib));
    }

    /// <summary>The four weighted table rows of group <paramref name="ib"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> TableRows(ulong* table, byte* qs, byte* qh, int ib)
    {
        qs += 4 * ib;
        uint h = Unsafe.ReadUnaligned<ushort>(qh + 2 * ib); // four nibbles: grid index bits 8-10 and the delta sign, per run
        return Vector256.Create(table[qs[0] | ((h << 8) & 0xf00)], table[qs[1] | ((h << 4) & 0xf00)],
            table[qs[2] | (h & 0xf00)], table[qs[3] | ((h >> 4) & 0xf00)]).AsByte();
    }

    /// <summary>The scales of 16-value groups 2·ib (low lane) and 2·ib+1 (high lane), each in every int16 of its lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> GroupScales(Vector256<byte> scales, int ib) =>
        Avx2.Shuffle(scales, Vector256.Create((ushort)(0x0100 * (2 * ib + 1) + 2 * ib)).AsByte()).AsInt16();

    /// <summary>Groups ib (low half) and ib+1 (high half) in one 512-bit vpmaddubsw and vpmaddwd.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> GroupPair(ulong* table, byte* qs, byte* qh, sbyte* q8, Vector256<byte> scales, int ib)
    {
        Vector512<byte> w = Vector512.Create(TableRows(table, qs, qh, ib), TableRows(table, qs, qh, ib + 1));
        Vector512<short> dot = Int8SimdWide.MultiplyAddAdjacent(w, Vector512.Load(q8 + 32 * ib));
        return Int8SimdWide.MultiplyAddAdjacent(dot, Vector512.Create(GroupScales(scales, ib), GroupScales(scales, ib + 1)));
    }

    /// <summary>
    /// AVX2. A 4096-entry table indexed by grid index and delta-sign bit holds w = 8·(grid+1) + 1 + s ∈ [0, 18]
    /// (s = ±1 the delta sign), so 8·Σ q·(grid + s/8) = Σ q·w - 9·Σ q: one vpmaddubsw per 32 values, and the -9·Σ q
    /// term of a whole block is one vpmaddwd of Q8_K's sixteen block sums. The sixteen 16-value scales are unpacked
    /// once per block (groups 0-3, 8-11 in one vector, 4-7, 12-15 in the other, so that one vpackusdw puts them in
    /// block-sum order), then split even/odd across the two 128-bit lanes so each group needs one in-lane shuffle.
    /// </summary>
    internal static float DotAvx2(byte* x, byte* y, int nb)
    {
        ulong* table = IqKernelTables.Iq1mWeighted;
        Vector256<float> acc = Vector256<float>.Zero;
        Vector256<uint> shifts = Vector256.Create(0u, 3, 6, 9, 0, 3, 6, 9);
        Vector256<int> evenWords = Vector256.Create(0, 0, 0, 0, 2, 2, 2, 2), oddWords = Vector256.Create(1, 1, 1, 1, 3, 3, 3, 3);
        Vector256<int> seven = Vector256.Create(7), one = Vector256.Create(1);
        // Per 128-bit lane: int16 words 0, 2, 4, 6 then 1, 3, 5, 7.
        Vector256<byte> evenOdd = Vector256.Create((byte)0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
            0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            ushort* sc = (ushort*)(x + ScalesOffset);
            byte* qs = x, qh = x + HighBitsOffset;
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);

            Vector128<int> scaleWords = Sse41.ConvertToVector128Int32(sc);
            Vector256<int> words = Vector256.Create(scaleWords, scaleWords);
            Vector256<int> lsA = Avx2.Or(Avx2.ShiftLeftLogical(Avx2.And(Avx2.ShiftRightLogicalVariable(Avx2.PermuteVar8x32(words, evenWords), shifts), seven), 1), one);
            Vector256<int> lsB = Avx2.Or(Avx2.ShiftLeftLogical(Avx2.And(Avx2.ShiftRightLogicalVariable(Avx2.PermuteVar8x32(words, oddWords), shifts), seven), 1), one);
            Vector256<short> ls16 = Avx2.PackUnsignedSaturate(lsA, lsB).AsInt16(); // groups 0..15 in order
            Vector256<int> sumi = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(y + Q8KLayout.SumsOffset)), ls16);
            sumi = Avx2.Subtract(Vector256<int>.Zero, Avx2.Add(sumi, Avx2.ShiftLeftLogical(sumi, 3))); // -9·Σ ls·bsum
            // Even 16-value groups' scales into the low lane, odd ones into the high lane: then one in-lane vpshufb
            // gives 32-value group ib its pair (a lane-crossing vpermd per group would cost more).
            Vector256<byte> scales = Avx2.Permute4x64(Avx2.Shuffle(ls16.AsByte(), evenOdd).AsUInt64(), 0b11_01_10_00).AsByte();
            Vector256<int> groups = Avx2.Add(
                Avx2.Add(Avx2.Add(Group(table, qs, qh, q8, scales, 0), Group(table, qs, qh, q8, scales, 1)),
                    Avx2.Add(Group(table, qs, qh, q8, scales, 2), Group(table, qs, qh, q8, scales, 3))),
                Avx2.Add(Avx2.Add(Group(table, qs, qh, q8, scales, 4), Group(table, qs, qh, q8, scales, 5)),
                    Avx2.Add(Group(table, qs, qh, q8, scales, 6), Group(table, qs, qh, q8, scales, 7))));
            float d = BlockScale(sc) * *(float*)y;
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(Avx2.Add(sumi, groups)), acc);
        }
        return 0.125f * KQuantVector.HorizontalSum(acc);
    }

    /// <summary>AVX-512: as <see cref="DotAvx2"/>, with two groups (64 values) per 512-bit multiply.</summary>
    internal static float DotAvx512(byte* x, byte* y, int nb)
    {
        ulong* table = IqKernelTables.Iq1mWeighted;
        Vector256<float> acc = Vector256<float>.Zero;
        Vector256<uint> shifts = Vector256.Create(0u, 3, 6, 9, 0, 3, 6, 9);
        Vector256<int> evenWords = Vector256.Create(0, 0, 0, 0, 2, 2, 2, 2), oddWords = Vector256.Create(1, 1, 1, 1, 3, 3, 3, 3);
        Vector256<int> seven = Vector256.Create(7), one = Vector256.Create(1);
        // Per 128-bit lane: int16 words 0, 2, 4, 6 then 1, 3, 5, 7.
        Vector256<byte> evenOdd = Vector256.Create((byte)0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
            0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            ushort* sc = (ushort*)(x + ScalesOffset);
            byte* qs = x, qh = x + HighBitsOffset;
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);

            Vector128<int> scaleWords = Sse41.ConvertToVector128Int32(sc);
            Vector256<int> words = Vector256.Create(scaleWords, scaleWords);
            Vector256<int> lsA = Avx2.Or(Avx2.ShiftLeftLogical(Avx2.And(Avx2.ShiftRightLogicalVariable(Avx2.PermuteVar8x32(words, evenWords), shifts), seven), 1), one);
            Vector256<int> lsB = Avx2.Or(Avx2.ShiftLeftLogical(Avx2.And(Avx2.ShiftRightLogicalVariable(Avx2.PermuteVar8x32(words, oddWords), shifts), seven), 1), one);
            Vector256<short> ls16 = Avx2.PackUnsignedSaturate(lsA, lsB).AsInt16(); // groups 0..15 in order
            Vector256<int> sumi = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(y + Q8KLayout.SumsOffset)), ls16);
            sumi = Avx2.Subtract(Vector256<int>.Zero, Avx2.Add(sumi, Avx2.ShiftLeftLogical(sumi, 3))); // -9·Σ ls·bsum
            // Even 16-value groups' scales into the low lane, odd ones into the high lane: then one in-lane vpshufb
            // gives 32-value group ib its pair (a lane-crossing vpermd per group would cost more).
            Vector256<byte> scales = Avx2.Permute4x64(Avx2.Shuffle(ls16.AsByte(), evenOdd).AsUInt64(), 0b11_01_10_00).AsByte();
            Vector512<int> groups = (GroupPair(table, qs, qh, q8, scales, 0) + GroupPair(table, qs, qh, q8, scales, 2))
                + (GroupPair(table, qs, qh, q8, scales, 4) + GroupPair(table, qs, qh, q8, scales, 6));
            float d = BlockScale(sc) * *(float*)y;
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(Avx2.Add(sumi, Int8SimdWide.Fold(groups))), acc);
        }
        return 0.125f * KQuantVector.HorizontalSum(acc);
    }
}

/// <summary>IQ1_M's kernels for <see cref="IqFormatKernels{TKernels}"/>.</summary>
internal readonly unsafe struct Iq1mKernels : IIqKernels
{
    public static GgmlType Type => GgmlType.IQ1_M;
    public static int BlockBytes => IQ1_MFormat.BlockBytes;
    public static bool HasAvx512 => true;
    public static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values) => IQ1_MFormat.DequantizeScalar(blocks, values);
    public static void DequantizeAvx2(byte* blocks, float* values, int blockCount) => IQ1_MFormat.DequantizeAvx2(blocks, values, blockCount);
    public static float DotScalar(byte* weights, byte* activations, int blockCount) => IQ1_MFormat.DotScalar(weights, activations, blockCount);
    public static float DotPortable(byte* weights, byte* activations, int blockCount) => IQ1_MFormat.DotPortable(weights, activations, blockCount);
    public static float DotAvx2(byte* weights, byte* activations, int blockCount) => IQ1_MFormat.DotAvx2(weights, activations, blockCount);
    public static float DotAvx512(byte* weights, byte* activations, int blockCount) => IQ1_MFormat.DotAvx512(weights, activations, blockCount);
}
