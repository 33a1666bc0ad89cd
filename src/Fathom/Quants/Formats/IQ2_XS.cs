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
    private const int BlockBytes = 74;
    private const int ScalesOffset = 66;
    private static readonly Iq2LatticeQuantizer.Search SearchSettings = new(Tries: 9, ReferenceFromLeastSquares: false, RequantizeAll: false);

    public override GgmlType Type => GgmlType.IQ2_XS;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override bool RequiresImportance => true;
    public override IReadOnlyList<KernelPath> ImplementedPaths { get; } = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = IqKernels.CheckDequantize(blocks, values, BlockBytes, "IQ2_XS");
        ulong[] grid = QuantTables.Iq2xsGrid;
        byte[] ksigns = QuantTables.KsignsIq2xs;
        for (int i = 0; i < nb; i++)
        {
            ReadOnlySpan<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            Span<float> y = values.Slice(i * 256, 256);
            float d = IqKernels.HalfToFloat(BinaryPrimitives.ReadUInt16LittleEndian(block));
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

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = IqKernels.CheckQuantize(values, blocks, importance, BlockBytes, "IQ2_XS");
        IqGridIndex grid = IqGridIndex.Iq2xs;
        Span<float> weight = stackalloc float[16], waux = stackalloc float[16], xval = stackalloc float[16], scales = stackalloc float[16];
        Span<sbyte> levels = stackalloc sbyte[16], trial = stackalloc sbyte[16];
        Span<int> entries = stackalloc int[2];
        Span<byte> signs = stackalloc byte[2];
        for (int ibl = 0; ibl < nb; ibl++)
        {
            ReadOnlySpan<float> x = values.Slice(256 * ibl, 256);
            ReadOnlySpan<float> qw = importance.IsEmpty ? default : importance.Slice(256 * ibl, 256);
            Span<byte> y = blocks.Slice(BlockBytes * ibl, BlockBytes);
            y.Clear();
            float sigma2 = 0;
            foreach (float v in x) sigma2 += v * v;
            sigma2 /= 256;
            float maxScale = 0;
            for (int ib = 0; ib < 16; ib++)
            {
                ReadOnlySpan<float> xb = x.Slice(16 * ib, 16);
                Iq2LatticeQuantizer.Weights(xb, qw.IsEmpty ? default : qw.Slice(16 * ib, 16), sigma2, 0.25f, weight);
                for (int i = 0; i < 16; i++) waux[i] = MathF.Sqrt(weight[i]);
                Iq2LatticeQuantizer.SplitSigns(xb, weight, xval, signs, evenParity: true);
                float max = 0;
                foreach (float v in xval) max = MathF.Max(max, v);
                if (max < 1e-15f)
                {
                    scales[ib] = 0;
                    continue;
                }
                float scale = Iq2LatticeQuantizer.QuantizeGroup(grid, SearchSettings, xval, weight, waux, entries, levels, trial);
                if (scale < 0)
                {
                    scale = -scale;
                    for (int k = 0; k < 2; k++) signs[k] = (byte)~signs[k];
                }
                for (int k = 0; k < 2; k++)
                    BinaryPrimitives.WriteUInt16LittleEndian(y[(2 + 2 * (2 * ib + k))..], (ushort)(entries[k] | ((signs[k] & 127) << 9)));
                scales[ib] = scale;
                maxScale = MathF.Max(maxScale, scale);
            }
            if (maxScale == 0)
            {
                y.Clear();
                continue;
            }
            float d = maxScale / 31;
            BinaryPrimitives.WriteUInt16LittleEndian(y, IqKernels.FloatToHalf(d));
            float id = 1 / d;
            for (int ib = 0; ib < 16; ib++)
                y[ScalesOffset + ib / 2] |= (byte)(Iq2LatticeQuantizer.ScaleCode(scales[ib], id, 15) << (4 * (ib % 2)));
        }
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = IqKernels.CheckDot(weights, activations, n, BlockBytes, "IQ2_XS");
        fixed (byte* x = weights)
        fixed (byte* y = activations)
        {
            return IqKernels.Resolve(path, ImplementedPaths) switch
            {
                KernelPath.Avx2 => DotAvx2(x, y, nb),
                KernelPath.Portable => DotPortable(x, y, nb),
                _ => DotScalar(x, y, nb),
            };
        }
    }

    internal static float DotScalar(byte* x, byte* y, int nb)
    {
        ulong* grid = IqKernelTables.Iq2xsGrid;
        byte[] ksigns = QuantTables.KsignsIq2xs;
        float sumf = 0;
        for (int i = 0; i < nb; i++, x += BlockBytes, y += Q8KLayout.BlockBytes)
        {
            float d = IqKernels.HalfToFloat(*(ushort*)x) * *(float*)y;
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
            float d = IqKernels.HalfToFloat(*(ushort*)x) * *(float*)y;
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
            byte* sc = x + ScalesOffset;
            sbyte* q8 = (sbyte*)(y + Q8KLayout.QuantsOffset);
            Vector256<int> sum1 = Vector256<int>.Zero, sum2 = Vector256<int>.Zero;
            for (int ib = 0; ib < 8; ib += 2, q2 += 8, q8 += 64)
            {
                Vector256<byte> g1 = Vector256.Create(grid[q2[0] & 511], grid[q2[1] & 511], grid[q2[2] & 511], grid[q2[3] & 511]).AsByte();
                Vector256<byte> g2 = Vector256.Create(grid[q2[4] & 511], grid[q2[5] & 511], grid[q2[6] & 511], grid[q2[7] & 511]).AsByte();
                Vector256<sbyte> s1 = Vector256.Create(signs[q2[0] >> 9], signs[q2[1] >> 9], signs[q2[2] >> 9], signs[q2[3] >> 9]).AsSByte();
                Vector256<sbyte> s2 = Vector256.Create(signs[q2[4] >> 9], signs[q2[5] >> 9], signs[q2[6] >> 9], signs[q2[7] >> 9]).AsSByte();
                Vector256<short> dot1 = Avx2.MultiplyAddAdjacent(g1, Avx2.Sign(Avx.LoadVector256(q8), s1));
                Vector256<short> dot2 = Avx2.MultiplyAddAdjacent(g2, Avx2.Sign(Avx.LoadVector256(q8 + 32), s2));
                sum1 = Avx2.Add(sum1, Avx2.MultiplyAddAdjacent(dot1, HalfScales(sc[ib])));
                sum2 = Avx2.Add(sum2, Avx2.MultiplyAddAdjacent(dot2, HalfScales(sc[ib + 1])));
            }
            float d = IqKernels.HalfToFloat(*(ushort*)x) * *(float*)y;
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(Avx2.Add(sum1, sum2)), acc);
        }
        return 0.125f * IqKernels.HorizontalSum(acc);
    }

    /// <summary>2l+1 of the low nibble in the low 128-bit lane, of the high nibble in the high lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> HalfScales(byte sc) =>
        Vector256.Create(Vector128.Create((short)(2 * (sc & 0xf) + 1)), Vector128.Create((short)(2 * (sc >> 4) + 1)));
}
