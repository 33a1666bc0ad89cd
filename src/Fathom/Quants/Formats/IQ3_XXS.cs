using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats;

/// <summary>
/// IQ3_XXS: super-blocks of 256 values in 3.0625 bits each, <c>f16 d; uint8 qs[64]; uint32 scales_and_signs[8]</c>.
/// qs[k] picks an iq3xxs_grid entry of four magnitudes for values 4k..4k+3. Word g (group of 32) holds four 7-bit sign
/// codes (ksigns_iq2xs: the eighth sign is the parity) and in its top nibble ls; value = d·(0.5+ls)·0.5·grid·sign.
/// Dots with Q8_K activations.
/// </summary>
public sealed class IQ3_XXSFormat : WeightFormat
{
    private const int BlockSize = 256;
    private const int BlockBytes = 98;
    private const int IndexOffset = 2;
    private const int WordOffset = 66;

    private static readonly Iq3Quantizer.Variant Variant = new(Iq3GridIndex.Xxs, EvenSigns: true, ScaleSteps: 15, Fudge: 1.0125f);

    public override GgmlType Type => GgmlType.IQ3_XXS;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => Dequantize(blocks, values, Avx2Dequantize.IsSupported);

    /// <summary>Dequantization with the AVX2 decoder or the scalar one, so that tests can check both against ggml.</summary>
    internal unsafe void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values, bool useAvx2)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        uint[] grid = QuantTables.Iq3xxsGrid;
        byte[] ksigns = QuantTables.KsignsIq2xs;
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
                    uint word = *(uint*)(block + WordOffset + 4 * ib);
                    float db = d * (0.5f + (word >> 28)) * 0.5f;
                    byte* idx = block + IndexOffset + 8 * ib;
                    for (int l = 0; l < 4; l++, y += 8)
                    {
                        int signs = ksigns[(word >> (7 * l)) & 127];
                        ulong magnitudes = grid[idx[2 * l]] | (ulong)grid[idx[2 * l + 1]] << 32;
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
            ushort d = Iq3Quantizer.Quantize(values.Slice(ibl * BlockSize, BlockSize),
                importance.IsEmpty ? default : importance.Slice(ibl * BlockSize, BlockSize), Variant, entries, signs, groupScales);
            BinaryPrimitives.WriteUInt16LittleEndian(block, d);
            for (int k = 0; k < 64; k++) block[IndexOffset + k] = (byte)entries[k];
            for (int ib = 0; ib < 8; ib++)
            {
                uint word = (uint)groupScales[ib] << 28;
                for (int l = 0; l < 4; l++) word |= (uint)(signs[4 * ib + l] & 127) << (7 * l);
                BinaryPrimitives.WriteUInt32LittleEndian(block[(WordOffset + 4 * ib)..], word);
            }
        }
    }

    public override unsafe float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(GgmlType.IQ3_XXS, BlockSize, BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        fixed (uint* grid = QuantTables.Iq3xxsGrid)
        fixed (ulong* signMasks = Iq3Signs.EvenMasks)
        {
            return KernelDispatch.UpToAvx2(path) switch
            {
                KernelPath.Avx2 => DotAvx2(w, a, nb, grid, signMasks),
                KernelPath.Portable => DotPortable(w, a, nb, grid, signMasks),
                _ => DotScalar(w, a, nb),
            };
        }
    }

    private static unsafe float DotScalar(byte* w, byte* a, int nb)
    {
        uint[] grid = QuantTables.Iq3xxsGrid;
        byte[] ksigns = QuantTables.KsignsIq2xs;
        float sum = 0;
        for (int ibl = 0; ibl < nb; ibl++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            int sumi = 0;
            for (int ib = 0; ib < 8; ib++)
            {
                uint word = *(uint*)(w + WordOffset + 4 * ib);
                int group = 0;
                for (int l = 0; l < 4; l++)
                {
                    int signs = ksigns[(word >> (7 * l)) & 127];
                    for (int j = 0; j < 8; j++)
                    {
                        int magnitude = (byte)(grid[w[IndexOffset + 8 * ib + 2 * l + j / 4]] >> (8 * (j % 4)));
                        int q = q8[32 * ib + 8 * l + j];
                        group += (signs & (1 << j)) != 0 ? -magnitude * q : magnitude * q;
                    }
                }
                sumi += group * (2 * (int)(word >> 28) + 1);
            }
            sum += Fp16.Lookup(*(ushort*)w) * *(float*)(a + Q8KLayout.ScaleOffset) * sumi;
        }
        // The group scale is d·(2ls+1)/4.
        return 0.25f * sum;
    }

    private static unsafe float DotPortable(byte* w, byte* a, int nb, uint* grid, ulong* signMasks)
    {
        float sum = 0;
        for (int ibl = 0; ibl < nb; ibl++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            byte* idx = w + IndexOffset;
            int sumi = 0;
            for (int ib = 0; ib < 8; ib++, idx += 8, q8 += 32)
            {
                uint word = *(uint*)(w + WordOffset + 4 * ib);
                Vector128<byte> g0 = Vector128.Create(grid[idx[0]], grid[idx[1]], grid[idx[2]], grid[idx[3]]).AsByte();
                Vector128<byte> g1 = Vector128.Create(grid[idx[4]], grid[idx[5]], grid[idx[6]], grid[idx[7]]).AsByte();
                Vector128<sbyte> m0 = Vector128.Create(signMasks[word & 127], signMasks[(word >> 7) & 127]).AsSByte();
                Vector128<sbyte> m1 = Vector128.Create(signMasks[(word >> 14) & 127], signMasks[(word >> 21) & 127]).AsSByte();
                Vector128<sbyte> a0 = Vector128.Load(q8), a1 = Vector128.Load(q8 + 16);
                Vector128<int> group = Int8Simd.DotPortable(g0, (a0 ^ m0) - m0) + Int8Simd.DotPortable(g1, (a1 ^ m1) - m1);
                sumi += Vector128.Sum(group) * (2 * (int)(word >> 28) + 1);
            }
            sum += Fp16.Lookup(*(ushort*)w) * *(float*)(a + Q8KLayout.ScaleOffset) * sumi;
        }
        return 0.25f * sum;
    }

    private static unsafe float DotAvx2(byte* w, byte* a, int nb, uint* grid, ulong* signMasks)
    {
        Vector256<float> acc = Vector256<float>.Zero;
        for (int ibl = 0; ibl < nb; ibl++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            byte* idx = w + IndexOffset;
            Vector256<int> sum0 = Vector256<int>.Zero, sum1 = Vector256<int>.Zero;
            for (int ib = 0; ib < 8; ib += 2, idx += 16, q8 += 64)
            {
                uint word0 = *(uint*)(w + WordOffset + 4 * ib), word1 = *(uint*)(w + WordOffset + 4 * ib + 4);
                Vector256<short> p0 = Avx2.MultiplyAddAdjacent(Grid32(grid, idx), Signed(Avx.LoadVector256(q8), word0));
                Vector256<short> p1 = Avx2.MultiplyAddAdjacent(Grid32(grid, idx + 8), Signed(Avx.LoadVector256(q8 + 32), word1));
                sum0 += Avx2.MultiplyAddAdjacent(p0, Vector256.Create((short)(2 * (word0 >> 28) + 1)));
                sum1 += Avx2.MultiplyAddAdjacent(p1, Vector256.Create((short)(2 * (word1 >> 28) + 1)));
            }
            float d = Fp16.Lookup(*(ushort*)w) * *(float*)(a + Q8KLayout.ScaleOffset);
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(sum0 + sum1), acc);
        }
        return 0.25f * Vector256.Sum(acc);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        Vector256<sbyte> Signed(Vector256<sbyte> q, uint word)
        {
            Vector256<sbyte> m = Vector256.Create(signMasks[word & 127], signMasks[(word >> 7) & 127], signMasks[(word >> 14) & 127], signMasks[(word >> 21) & 127]).AsSByte();
            return Avx2.Subtract(q ^ m, m);
        }
    }

    /// <summary>The 32 magnitudes of eight grid entries, gathered by index.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<byte> Grid32(uint* grid, byte* idx) =>
        Vector256.Create(grid[idx[0]], grid[idx[1]], grid[idx[2]], grid[idx[3]], grid[idx[4]], grid[idx[5]], grid[idx[6]], grid[idx[7]]).AsByte();
}
