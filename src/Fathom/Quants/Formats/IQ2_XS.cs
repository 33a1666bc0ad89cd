using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats.LowBitIq;
using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats;

/// <summary>
/// IQ2_XS, 2.3125 bits per weight: <c>half d; uint16 qs[32]; uint8 scales[8]</c>. Each uint16 holds a 9-bit index
/// into the 512-entry grid and a 7-bit sign index (ksigns_iq2xs completes even parity); each 16 values share a
/// 4-bit scale l (two per byte, low nibble first): a value is d·(0.5 + l)/4 · grid · sign.
/// </summary>
public sealed unsafe class IQ2_XSFormat : WeightFormat
{
    internal const int BlockBytes = 74;
    internal const int ScalesOffset = 66;

    public override GgmlType Type => GgmlType.IQ2_XS;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override bool RequiresImportance => true;
    public override IReadOnlyList<KernelPath> ImplementedPaths => IqFormatKernels<Iq2xsKernels>.Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => IqFormatKernels<Iq2xsKernels>.Dequantize(blocks, values);

    internal static void DequantizeAvx2(byte* x, float* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2xsGrid, masks = IqKernelTables.EvenSignsMask;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += 256)
        {
            float d = Fp16.ToSingle(*(ushort*)x);
            ushort* q2 = (ushort*)(x + 2);
            for (int ib = 0; ib < 8; ib++)
            {
                byte sc = x[ScalesOffset + ib];
                Vector256<float> db0 = Vector256.Create(d * (0.5f + (sc & 0xf)) * 0.25f);
                Vector256<float> db1 = Vector256.Create(d * (0.5f + (sc >> 4)) * 0.25f);
                for (int l = 0; l < 4; l++)
                {
                    int q = q2[4 * ib + l];
                    IqRunsAvx2.StoreSigned(y + 32 * ib + 8 * l, grid + (q & 511), masks + (q >> 9), l < 2 ? db0 : db1);
                }
            }
        }
    }

    /// <summary>The plain reference decoder, as ggml's dequantize_row; the AVX2 decoder is tested against it.</summary>
    internal static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(GgmlTypes.Layout(GgmlType.IQ2_XS), values.Length, blocks.Length);
        ulong[] grid = QuantTables.Iq2xsGrid;
        byte[] ksigns = QuantTables.KsignsIq2xs;
        for (int i = 0; i < nb; i++)
        {
            ReadOnlySpan<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            Span<float> y = values.Slice(i * 256, 256);
            float d = Fp16.ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(block));
            for (int ib = 0; ib < 8; ib++)
            {
                byte sc = block[ScalesOffset + ib];
                float db0 = d * (0.5f + (sc & 0xf)) * 0.25f;
                float db1 = d * (0.5f + (sc >> 4)) * 0.25f;
                for (int l = 0; l < 4; l++)
                {
                    int q = BinaryPrimitives.ReadUInt16LittleEndian(block[(2 + 2 * (4 * ib + l))..]);
                    ulong g = grid[q & 511];
                    byte signs = ksigns[q >> 9];
                    float db = l < 2 ? db0 : db1;
                    for (int j = 0; j < 8; j++)
                        y[32 * ib + 8 * l + j] = db * (byte)(g >> (8 * j)) * ((signs >> j & 1) != 0 ? -1f : 1f);
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance) =>
        Iq2BlockEncoder<Iq2xsLayout>.Quantize(GgmlType.IQ2_XS, values, blocks, importance);

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        IqFormatKernels<Iq2xsKernels>.Dot(weights, activations, n, path);

    internal override float DotUnchecked(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        IqFormatKernels<Iq2xsKernels>.DotUnchecked(weights, activations, n, path);

    internal static float DotScalar(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2xsGrid;
        byte[] ksigns = QuantTables.KsignsIq2xs;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            ushort* q2 = (ushort*)(x + 2);
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            int bsum = 0;
            for (int ib = 0; ib < 16; ib++)
            {
                int ls = 2 * ((x[ScalesOffset + ib / 2] >> (4 * (ib % 2))) & 0xf) + 1;
                int sumi = 0;
                for (int l = 0; l < 2; l++, q8 += 8)
                {
                    int q = q2[2 * ib + l];
                    byte* g = (byte*)(grid + (q & 511));
                    int signs = ksigns[q >> 9];
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
        ulong* grid = IqKernelTables.Iq2xsGrid;
        ulong* masks = IqKernelTables.EvenSignsMask;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            ushort* q2 = (ushort*)(x + 2);
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            Vector128<int> sumi = Vector128<int>.Zero;
            for (int ib = 0; ib < 16; ib++, q8 += 16, q2 += 2)
            {
                int ls = 2 * ((x[ScalesOffset + ib / 2] >> (4 * (ib % 2))) & 0xf) + 1;
                Vector128<short> products = IQ2_XXSFormat.Iq2PortableProducts(
                    Vector128.Create(grid[q2[0] & 511], grid[q2[1] & 511]), Vector128.Create(masks[q2[0] >> 9], masks[q2[1] >> 9]), q8);
                (Vector128<int> lo, Vector128<int> hi) = Vector128.Widen(products);
                sumi += (lo + hi) * ls;
            }
            sumf += d * Vector128.Sum(sumi);
        }
        return 0.125f * sumf;
    }

    /// <summary>AVX2: as IQ2_XXS, with the two 16-value scales of a 32-value group in the two 128-bit lanes.</summary>
    internal static float DotAvx2(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2xsGrid;
        ulong* signs = IqKernelTables.EvenSignsPlusMinusOne;
        Vector256<float> acc = Vector256<float>.Zero;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            ushort* q2 = (ushort*)(x + 2);
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            Vector256<byte> scales = OddScales(x + ScalesOffset);
            Vector256<int> sum = Avx2.Add(
                Avx2.Add(Avx2.Add(Group(grid, signs, q2, q8, scales, 0), Group(grid, signs, q2, q8, scales, 1)),
                    Avx2.Add(Group(grid, signs, q2, q8, scales, 2), Group(grid, signs, q2, q8, scales, 3))),
                Avx2.Add(Avx2.Add(Group(grid, signs, q2, q8, scales, 4), Group(grid, signs, q2, q8, scales, 5)),
                    Avx2.Add(Group(grid, signs, q2, q8, scales, 6), Group(grid, signs, q2, q8, scales, 7))));
            float d = Fp16.ToSingle(*(ushort*)x) * *(float*)y;
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(sum), acc);
        }
        return 0.125f * KQuantVector.HorizontalSum(acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Group(ulong* grid, ulong* signs, ushort* q2, sbyte* q8, Vector256<byte> scales, int ib)
    {
        ushort* q = q2 + 4 * ib;
        Vector256<byte> g = Vector256.Create(grid[q[0] & 511u], grid[q[1] & 511u], grid[q[2] & 511u], grid[q[3] & 511u]).AsByte();
        Vector256<sbyte> s = Vector256.Create(signs[q[0] >> 9], signs[q[1] >> 9], signs[q[2] >> 9], signs[q[3] >> 9]).AsSByte();
        Vector256<short> dot = Avx2.MultiplyAddAdjacent(g, Avx2.Sign(Avx.LoadVector256(q8 + 32 * ib), s));
        return Avx2.MultiplyAddAdjacent(dot, ScaleOf(scales, ib));
    }

    /// <summary>
    /// The eight scale bytes of a block as odd scales 2l+1, low nibbles in the low 128-bit lane and high nibbles in
    /// the high lane, so that <see cref="ScaleOf"/> needs one in-lane shuffle per 32-value group.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> OddScales(byte* scales)
    {
        Vector256<ulong> v = Vector256.Create(Unsafe.ReadUnaligned<ulong>(scales));
        Vector256<byte> nibbles = Avx2.And(Avx2.ShiftRightLogicalVariable(v, Vector256.Create(0ul, 0, 4, 4)).AsByte(), Vector256.Create((byte)0x0f));
        return Avx2.Or(Avx2.Add(nibbles, nibbles), Vector256.Create((byte)1));
    }

    /// <summary>Group <paramref name="ib"/>'s two scales spread over the int16 lanes of their 128-bit halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> ScaleOf(Vector256<byte> oddScales, int ib) =>
        Avx2.Shuffle(oddScales, Vector256.Create((ushort)(0x8000 | ib)).AsByte()).AsInt16();
}

/// <summary>
/// IQ2_XS's super-block for <see cref="Iq2BlockEncoder{TLayout}"/>: per 8 values a uint16 of a 9-bit grid entry and a
/// 7-bit sign pattern; the 16 groups' 4-bit scales packed two per byte after them.
/// </summary>
internal readonly struct Iq2xsLayout : IIq2BlockLayout
{
    public static int GroupSize => 16;
    public static int BlockBytes => IQ2_XSFormat.BlockBytes;
    public static IqGridIndex Grid => IqGridIndex.Iq2xs;
    public static Iq2LatticeQuantizer.Search Search { get; } = new(Tries: 9, ReferenceFromLeastSquares: false, RequantizeAll: false);
    public static float Sigma2Factor => 1;
    public static bool EvenParity => true;
    public static float ZeroGroupThreshold => 1e-15f;
    public static float StoredScaleFactor => 1;

    public static void StoreGroup(Span<byte> block, int group, ReadOnlySpan<int> entries, ReadOnlySpan<byte> signs)
    {
        for (int k = 0; k < 2; k++)
            BinaryPrimitives.WriteUInt16LittleEndian(block[(2 + 2 * (2 * group + k))..], (ushort)(entries[k] | ((signs[k] & 127) << 9)));
    }

    public static void StoreScale(Span<byte> block, int group, int code) => block[IQ2_XSFormat.ScalesOffset + group / 2] |= (byte)(code << (4 * (group % 2)));
}

/// <summary>IQ2_XS's kernels for <see cref="IqFormatKernels{TKernels}"/>.</summary>
internal readonly unsafe struct Iq2xsKernels : IIqKernels
{
    public static GgmlType Type => GgmlType.IQ2_XS;
    public static int BlockBytes => IQ2_XSFormat.BlockBytes;
    public static bool HasAvx512 => false;
    public static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values) => IQ2_XSFormat.DequantizeScalar(blocks, values);
    public static void DequantizeAvx2(byte* blocks, float* values, int blockCount) => IQ2_XSFormat.DequantizeAvx2(blocks, values, blockCount);
    public static float DotScalar(byte* weights, byte* activations, int blockCount) => IQ2_XSFormat.DotScalar(weights, activations, blockCount);
    public static float DotPortable(byte* weights, byte* activations, int blockCount) => IQ2_XSFormat.DotPortable(weights, activations, blockCount);
    public static float DotAvx2(byte* weights, byte* activations, int blockCount) => IQ2_XSFormat.DotAvx2(weights, activations, blockCount);
    public static float DotAvx512(byte* weights, byte* activations, int blockCount) => throw new NotSupportedException("IQ2_XS has no AVX-512 kernel.");
}
