using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats.LowBitIq;
using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats;

/// <summary>
/// IQ2_S, 2.5625 bits per weight: <c>half d; uint8 qs[64]; uint8 qh[8]; uint8 scales[8]</c>. The first 32 bytes of
/// qs are the low 8 bits of 10-bit indices into the 1024-entry grid (qh adds 2 bits per 8 values), the next 32 are
/// full sign bytes; each 16 values share a 4-bit scale l: a value is d·(0.5 + l)/4 · grid · sign.
/// </summary>
public sealed unsafe class IQ2_SFormat : WeightFormat
{
    internal const int BlockBytes = 82;
    internal const int SignsOffset = 2 + 32;
    internal const int HighBitsOffset = 66;
    internal const int ScalesOffset = 74;

    public override GgmlType Type => GgmlType.IQ2_S;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => IqFormatKernels<Iq2sKernels>.Paths;

    private static int GridIndex(byte* x, int run) => x[2 + run] | ((x[HighBitsOffset + run / 4] << (8 - 2 * (run % 4))) & 0x300);

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => IqFormatKernels<Iq2sKernels>.Dequantize(blocks, values);

    internal static void DequantizeAvx2(byte* x, float* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2sGrid, masks = IqKernelTables.SignsMask;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += 256)
        {
            float d = Fp16.ToSingle(*(ushort*)x);
            for (int ib = 0; ib < 8; ib++)
            {
                byte sc = x[ScalesOffset + ib];
                Vector256<float> db0 = Vector256.Create(d * (0.5f + (sc & 0xf)) * 0.25f);
                Vector256<float> db1 = Vector256.Create(d * (0.5f + (sc >> 4)) * 0.25f);
                for (int l = 0; l < 4; l++)
                {
                    int run = 4 * ib + l;
                    IqRunsAvx2.StoreSigned(y + 8 * run, grid + GridIndex(x, run), masks + x[SignsOffset + run], l < 2 ? db0 : db1);
                }
            }
        }
    }

    /// <summary>The plain reference decoder, as ggml's dequantize_row; the AVX2 decoder is tested against it.</summary>
    internal static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(GgmlTypes.Layout(GgmlType.IQ2_S), values.Length, blocks.Length);
        ulong[] grid = QuantTables.Iq2sGrid;
        fixed (byte* first = blocks)
        {
            for (int i = 0; i < nb; i++)
            {
                byte* x = first + i * BlockBytes;
                Span<float> y = values.Slice(i * 256, 256);
                float d = Fp16.ToSingle(*(ushort*)x);
                for (int ib = 0; ib < 8; ib++)
                {
                    byte sc = x[ScalesOffset + ib];
                    float db0 = d * (0.5f + (sc & 0xf)) * 0.25f;
                    float db1 = d * (0.5f + (sc >> 4)) * 0.25f;
                    for (int l = 0; l < 4; l++)
                    {
                        int run = 4 * ib + l;
                        ulong g = grid[GridIndex(x, run)];
                        byte signs = x[SignsOffset + run];
                        float db = l < 2 ? db0 : db1;
                        for (int j = 0; j < 8; j++)
                            y[8 * run + j] = db * (byte)(g >> (8 * j)) * ((signs >> j & 1) != 0 ? -1f : 1f);
                    }
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance) =>
        Iq2BlockEncoder<Iq2sLayout>.Quantize(GgmlType.IQ2_S, values, blocks, importance);

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        IqFormatKernels<Iq2sKernels>.Dot(weights, activations, n, path);

    internal override float DotUnchecked(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        IqFormatKernels<Iq2sKernels>.DotUnchecked(weights, activations, n, path);

    internal static float DotScalar(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2sGrid;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            int bsum = 0;
            for (int ib = 0; ib < 16; ib++)
            {
                int ls = 2 * ((x[ScalesOffset + ib / 2] >> (4 * (ib % 2))) & 0xf) + 1;
                int sumi = 0;
                for (int l = 0; l < 2; l++, q8 += 8)
                {
                    int run = 2 * ib + l;
                    byte* g = (byte*)(grid + GridIndex(x, run));
                    int signs = x[SignsOffset + run];
                    for (int j = 0; j < 8; j++) sumi += g[j] * q8[j] * ((signs >> j & 1) != 0 ? -1 : 1);
                }
                bsum += sumi * ls;
            }
            sumf += d * bsum;
        }
        return 0.125f * sumf;
    }

    /// <summary>Vector128 only: one 16-value half-group (one scale) per step.</summary>
    internal static float DotPortable(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2sGrid;
        ulong* masks = IqKernelTables.SignsMask;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            Vector128<int> sumi = Vector128<int>.Zero;
            for (int ib = 0; ib < 16; ib++, q8 += 16)
            {
                int ls = 2 * ((x[ScalesOffset + ib / 2] >> (4 * (ib % 2))) & 0xf) + 1;
                int run = 2 * ib;
                Vector128<short> products = IQ2_XXSFormat.Iq2PortableProducts(
                    Vector128.Create(grid[GridIndex(x, run)], grid[GridIndex(x, run + 1)]),
                    Vector128.Create(masks[x[SignsOffset + run]], masks[x[SignsOffset + run + 1]]), q8);
                (Vector128<int> lo, Vector128<int> hi) = Vector128.Widen(products);
                sumi += (lo + hi) * ls;
            }
            sumf += d * Vector128.Sum(sumi);
        }
        return 0.125f * sumf;
    }

    /// <summary>AVX2: as IQ2_XS; the full sign bytes are expanded in SIMD (broadcast, vpshufb, bit test).</summary>
    internal static float DotAvx2(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2sGrid;
        Vector256<float> acc = Vector256<float>.Zero;
        Vector256<byte> signSpread = Vector256.Create(
            (byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        Vector256<byte> bitMasks = Vector256.Create(0x8040201008040201UL).AsByte();
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            Vector256<byte> scales = IQ2_XSFormat.OddScales(x + ScalesOffset);
            Vector256<int> sum = Avx2.Add(
                Avx2.Add(Avx2.Add(Group(grid, x, q8, scales, signSpread, bitMasks, 0), Group(grid, x, q8, scales, signSpread, bitMasks, 1)),
                    Avx2.Add(Group(grid, x, q8, scales, signSpread, bitMasks, 2), Group(grid, x, q8, scales, signSpread, bitMasks, 3))),
                Avx2.Add(Avx2.Add(Group(grid, x, q8, scales, signSpread, bitMasks, 4), Group(grid, x, q8, scales, signSpread, bitMasks, 5)),
                    Avx2.Add(Group(grid, x, q8, scales, signSpread, bitMasks, 6), Group(grid, x, q8, scales, signSpread, bitMasks, 7))));
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(sum), acc);
        }
        return 0.125f * KQuantVector.HorizontalSum(acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Group(ulong* grid, byte* x, sbyte* q8, Vector256<byte> scales, Vector256<byte> signSpread, Vector256<byte> bitMasks, int ib)
    {
        byte* qs = x + 2 + 4 * ib, sg = x + SignsOffset + 4 * ib;
        uint h = x[HighBitsOffset + ib];
        Vector256<byte> g = Vector256.Create(grid[qs[0] | ((h << 8) & 0x300)], grid[qs[1] | ((h << 6) & 0x300)],
            grid[qs[2] | ((h << 4) & 0x300)], grid[qs[3] | ((h << 2) & 0x300)]).AsByte();
        // The four sign bytes are contiguous: one broadcast load, each byte spread over its 8 values, bits tested.
        Vector256<byte> bits = Avx2.Shuffle(Avx2.BroadcastScalarToVector256((uint*)sg).AsByte(), signSpread);
        Vector256<sbyte> s = Avx2.Or(Avx2.CompareEqual(Avx2.And(bits, bitMasks), bitMasks), Vector256.Create((byte)1)).AsSByte();
        Vector256<short> dot = Avx2.MultiplyAddAdjacent(g, Avx2.Sign(Avx.LoadVector256(q8 + 32 * ib), s));
        return Avx2.MultiplyAddAdjacent(dot, IQ2_XSFormat.ScaleOf(scales, ib));
    }
}

/// <summary>
/// IQ2_S's super-block for <see cref="Iq2BlockEncoder{TLayout}"/>: per 8 values the low byte of a 10-bit grid entry,
/// then 8-bit sign patterns, the entries' high bits (2 per run) and the 4-bit group scales, two per byte.
/// </summary>
internal readonly struct Iq2sLayout : IIq2BlockLayout
{
    public static int GroupSize => 16;
    public static int BlockBytes => IQ2_SFormat.BlockBytes;
    public static IqGridIndex Grid => IqGridIndex.Iq2s;
    public static Iq2LatticeQuantizer.Search Search { get; } = new(Tries: 9, ReferenceFromLeastSquares: false, RequantizeAll: false);
    public static float Sigma2Factor => 2;
    public static bool EvenParity => false;
    public static float ZeroGroupThreshold => 1e-8f;
    public static float StoredScaleFactor => 0.9875f;

    public static void StoreGroup(Span<byte> block, int group, ReadOnlySpan<int> entries, ReadOnlySpan<byte> signs)
    {
        for (int k = 0; k < 2; k++)
        {
            int run = 2 * group + k;
            block[2 + run] = (byte)entries[k];
            block[IQ2_SFormat.HighBitsOffset + run / 4] |= (byte)((entries[k] >> 8) << (2 * (run % 4)));
            block[IQ2_SFormat.SignsOffset + run] = signs[k];
        }
    }

    public static void StoreScale(Span<byte> block, int group, int code) => block[IQ2_SFormat.ScalesOffset + group / 2] |= (byte)(code << (4 * (group % 2)));
}

/// <summary>IQ2_S's kernels for <see cref="IqFormatKernels{TKernels}"/>.</summary>
internal readonly unsafe struct Iq2sKernels : IIqKernels
{
    public static GgmlType Type => GgmlType.IQ2_S;
    public static int BlockBytes => IQ2_SFormat.BlockBytes;
    public static bool HasAvx512 => false;
    public static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values) => IQ2_SFormat.DequantizeScalar(blocks, values);
    public static void DequantizeAvx2(byte* blocks, float* values, int blockCount) => IQ2_SFormat.DequantizeAvx2(blocks, values, blockCount);
    public static float DotScalar(byte* weights, byte* activations, int blockCount) => IQ2_SFormat.DotScalar(weights, activations, blockCount);
    public static float DotPortable(byte* weights, byte* activations, int blockCount) => IQ2_SFormat.DotPortable(weights, activations, blockCount);
    public static float DotAvx2(byte* weights, byte* activations, int blockCount) => IQ2_SFormat.DotAvx2(weights, activations, blockCount);
    public static float DotAvx512(byte* weights, byte* activations, int blockCount) => throw new NotSupportedException("IQ2_S has no AVX-512 kernel.");
}
