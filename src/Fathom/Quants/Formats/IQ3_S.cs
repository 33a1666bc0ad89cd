using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats;

/// <summary>
/// IQ3_S: super-blocks of 256 values in 3.4375 bits each,
/// <c>f16 d; uint8 qs[64]; uint8 qh[8]; uint8 signs[32]; uint8 scales[4]</c>. Entry k of the 512-entry iq3s_grid is
/// qs[k] | (bit k%8 of qh[k/8]) &lt;&lt; 8 and covers values 4k..4k+3; sign byte k covers values 8k..8k+7; group g of 32 has
/// the 4-bit ls in nibble g%2 of scales[g/2], value = d·(1+2ls)·grid·sign. Dots with Q8_K activations.
/// </summary>
public sealed class IQ3_SFormat : WeightFormat
{
    private const int BlockSize = 256;
    private const int BlockBytes = 110;
    private const int IndexOffset = 2;
    private const int HighOffset = 66;
    private const int SignOffset = 74;
    private const int ScaleOffset = 106;

    private static readonly Iq3Quantizer.Variant Variant = new(Iq3GridIndex.S, EvenSigns: false, ScaleSteps: 9, Fudge: 1.033f);

    public override GgmlType Type => GgmlType.IQ3_S;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe int Entry(byte* block, int k) => block[IndexOffset + k] | ((block[HighOffset + k / 8] >> (k % 8)) & 1) << 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe int GroupMultiplier(byte* block, int ib) => 2 * ((block[ScaleOffset + ib / 2] >> (4 * (ib % 2))) & 0xF) + 1;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => Dequantize(blocks, values, Avx2Dequantize.IsSupported);

    /// <summary>Dequantization with the AVX2 decoder or the scalar one, so that tests can check both against ggml.</summary>
    internal unsafe void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values, bool useAvx2)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        uint[] grid = QuantTables.Iq3sGrid;
        fixed (byte* start = blocks)
        fixed (float* output = values)
        {
            for (int ibl = 0; ibl < nb; ibl++)
            {
                byte* block = start + ibl * BlockBytes;
                float d = Fp16.Lookup(*(ushort*)block);
                float* y = output + ibl * BlockSize;
                for (int ib = 0; ib < 8; ib++)
                {
                    float db = d * GroupMultiplier(block, ib);
                    for (int k = 8 * ib; k < 8 * ib + 8; k += 2, y += 8)
                    {
                        int signs = block[SignOffset + k / 2];
                        ulong magnitudes = grid[Entry(block, k)] | (ulong)grid[Entry(block, k + 1)] << 32;
                        if (useAvx2 && Avx2Dequantize.IsSupported)
                        {
                            Avx2Dequantize.SignedMagnitudes(magnitudes, signs, db, y);
                            continue;
                        }
                        for (int j = 0; j < 8; j++)
                            y[j] = db * (byte)(magnitudes >> (8 * j)) * ((signs & (1 << j)) != 0 ? -1f : 1f);
                    }
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Quantize(Layout, values, blocks.Length, importance);
        Span<ushort> entries = stackalloc ushort[64];
        Span<byte> signs = stackalloc byte[32];
        Span<byte> groupScales = stackalloc byte[8];
        for (int ibl = 0; ibl < nb; ibl++)
        {
            Span<byte> block = blocks.Slice(ibl * BlockBytes, BlockBytes);
            block.Clear();
            ushort d = Iq3Quantizer.Quantize(values.Slice(ibl * BlockSize, BlockSize),
                importance.IsEmpty ? default : importance.Slice(ibl * BlockSize, BlockSize), Variant, entries, signs, groupScales);
            BinaryPrimitives.WriteUInt16LittleEndian(block, d);
            for (int k = 0; k < 64; k++)
            {
                block[IndexOffset + k] = (byte)entries[k];
                block[HighOffset + k / 8] |= (byte)((entries[k] >> 8) << (k % 8));
            }
            signs.CopyTo(block[SignOffset..]);
            for (int ib = 0; ib < 8; ib++) block[ScaleOffset + ib / 2] |= (byte)(groupScales[ib] << (4 * (ib % 2)));
        }
    }

    public override unsafe float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(GgmlType.IQ3_S, BlockSize, BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        fixed (uint* grid = QuantTables.Iq3sGrid)
        fixed (ulong* signMasks = Iq3Signs.Masks)
        {
            return KernelDispatch.UpToAvx2(path) switch
            {
                KernelPath.Avx2 => DotAvx2(w, a, nb, grid),
                KernelPath.Portable => DotPortable(w, a, nb, grid, signMasks),
                _ => DotScalar(w, a, nb),
            };
        }
    }

    private static unsafe float DotScalar(byte* w, byte* a, int nb)
    {
        uint[] grid = QuantTables.Iq3sGrid;
        float sum = 0;
        for (int ibl = 0; ibl < nb; ibl++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            int sumi = 0;
            for (int ib = 0; ib < 8; ib++)
            {
                int group = 0;
                for (int k = 8 * ib; k < 8 * ib + 8; k++)
                {
                    uint entry = grid[Entry(w, k)];
                    int signs = w[SignOffset + k / 2];
                    for (int j = 0; j < 4; j++)
                    {
                        int product = (byte)(entry >> (8 * j)) * q8[4 * k + j];
                        group += (signs & (1 << (4 * (k % 2) + j))) != 0 ? -product : product;
                    }
                }
                sumi += group * GroupMultiplier(w, ib);
            }
            sum += Fp16.Lookup(*(ushort*)w) * *(float*)(a + Q8KLayout.ScaleOffset) * sumi;
        }
        return sum;
    }

    private static unsafe float DotPortable(byte* w, byte* a, int nb, uint* grid, ulong* signMasks)
    {
        float sum = 0;
        for (int ibl = 0; ibl < nb; ibl++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            int sumi = 0;
            for (int ib = 0; ib < 8; ib++, q8 += 32)
            {
                int k = 8 * ib;
                Vector128<byte> g0 = Vector128.Create(grid[Entry(w, k)], grid[Entry(w, k + 1)], grid[Entry(w, k + 2)], grid[Entry(w, k + 3)]).AsByte();
                Vector128<byte> g1 = Vector128.Create(grid[Entry(w, k + 4)], grid[Entry(w, k + 5)], grid[Entry(w, k + 6)], grid[Entry(w, k + 7)]).AsByte();
                byte* s = w + SignOffset + 4 * ib;
                Vector128<sbyte> m0 = Vector128.Create(signMasks[s[0]], signMasks[s[1]]).AsSByte();
                Vector128<sbyte> m1 = Vector128.Create(signMasks[s[2]], signMasks[s[3]]).AsSByte();
                Vector128<sbyte> a0 = Vector128.Load(q8), a1 = Vector128.Load(q8 + 16);
                Vector128<int> group = Int8Simd.DotPortable(g0, (a0 ^ m0) - m0) + Int8Simd.DotPortable(g1, (a1 ^ m1) - m1);
                sumi += Vector128.Sum(group) * GroupMultiplier(w, ib);
            }
            sum += Fp16.Lookup(*(ushort*)w) * *(float*)(a + Q8KLayout.ScaleOffset) * sumi;
        }
        return sum;
    }

    private static unsafe float DotAvx2(byte* w, byte* a, int nb, uint* grid)
    {
        // Sign byte k of a group goes to bytes 8k..8k+7; each byte then tests its own bit.
        Vector256<sbyte> spread = Vector256.Create((sbyte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        Vector256<byte> bits = Vector256.Create(0x8040201008040201UL).AsByte();
        Vector256<float> acc = Vector256<float>.Zero;
        for (int ibl = 0; ibl < nb; ibl++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            Vector256<int> sum0 = Vector256<int>.Zero, sum1 = Vector256<int>.Zero;
            for (int ib = 0; ib < 8; ib += 2, q8 += 64)
            {
                Vector256<short> p0 = Avx2.MultiplyAddAdjacent(Grid32(ib), Signed(Avx.LoadVector256(q8), ib));
                Vector256<short> p1 = Avx2.MultiplyAddAdjacent(Grid32(ib + 1), Signed(Avx.LoadVector256(q8 + 32), ib + 1));
                sum0 += Avx2.MultiplyAddAdjacent(p0, Vector256.Create((short)GroupMultiplier(w, ib)));
                sum1 += Avx2.MultiplyAddAdjacent(p1, Vector256.Create((short)GroupMultiplier(w, ib + 1)));
            }
            float d = Fp16.Lookup(*(ushort*)w) * *(float*)(a + Q8KLayout.ScaleOffset);
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(sum0 + sum1), acc);
        }
        return Vector256.Sum(acc);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        Vector256<byte> Grid32(int ib)
        {
            // Nine-bit indices from qs and one qh bit each; eight scalar loads beat vpgatherdd on common cores.
            byte* qs = w + IndexOffset + 8 * ib;
            uint qh = w[HighOffset + ib];
            return Vector256.Create(
                grid[qs[0] | (qh << 8 & 256)], grid[qs[1] | (qh << 7 & 256)], grid[qs[2] | (qh << 6 & 256)], grid[qs[3] | (qh << 5 & 256)],
                grid[qs[4] | (qh << 4 & 256)], grid[qs[5] | (qh << 3 & 256)], grid[qs[6] | (qh << 2 & 256)], grid[qs[7] | (qh << 1 & 256)]).AsByte();
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        Vector256<sbyte> Signed(Vector256<sbyte> q, int ib)
        {
            Vector256<byte> s = Avx2.Shuffle(Vector256.Create(*(uint*)(w + SignOffset + 4 * ib)).AsSByte(), spread).AsByte();
            Vector256<sbyte> m = Avx2.CompareEqual(s & bits, bits).AsSByte();
            return Avx2.Subtract(q ^ m, m);
        }
    }
}
