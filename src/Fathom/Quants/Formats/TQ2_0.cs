using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// TQ2_0: ternary super-blocks of 256 values, <c>uint8 qs[64]; f16 d</c>. Value 128h + 32l + m is d·(c − 1) with c the
/// 2-bit field l of byte qs[32h + m] (c = 3, value 2d, is never written but decodes). Dots with Q8_K activations.
/// </summary>
public sealed class TQ2_0Format : WeightFormat
{
    private const int BlockSize = 256;
    private const int BlockBytes = 66;
    private const int ScaleOffset = 64;

    public override GgmlType Type => GgmlType.TQ2_0;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => Dequantize(blocks, values, Avx2Dequantize.IsSupported);

    /// <summary>Dequantization with the AVX2 decoder or the scalar one, so that tests can check both against ggml.</summary>
    internal unsafe void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values, bool useAvx2)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        fixed (byte* start = blocks)
        fixed (float* output = values)
        {
            for (int ib = 0; ib < nb; ib++)
            {
                byte* block = start + ib * BlockBytes;
                float d = Fp16.Lookup(*(ushort*)(block + ScaleOffset));
                float* y = output + ib * BlockSize;
                if (useAvx2 && Avx2Dequantize.IsSupported)
                {
                    for (int h = 0; h < 2; h++)
                    {
                        Vector256<ushort> q = Avx.LoadVector256(block + 32 * h).AsUInt16();
                        Vector256<byte> three = Vector256.Create((byte)3);
                        Avx2Dequantize.OffsetCodes(q.AsByte() & three, d, y + 128 * h);
                        Avx2Dequantize.OffsetCodes(Avx2.ShiftRightLogical(q, 2).AsByte() & three, d, y + 128 * h + 32);
                        Avx2Dequantize.OffsetCodes(Avx2.ShiftRightLogical(q, 4).AsByte() & three, d, y + 128 * h + 64);
                        Avx2Dequantize.OffsetCodes(Avx2.ShiftRightLogical(q, 6).AsByte() & three, d, y + 128 * h + 96);
                    }
                    continue;
                }
                for (int h = 0; h < 2; h++)
                    for (int l = 0; l < 4; l++)
                        for (int m = 0; m < 32; m++)
                            y[128 * h + 32 * l + m] = (((block[32 * h + m] >> (2 * l)) & 3) - 1) * d;
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Quantize(Layout, values, blocks.Length, importance);
        Span<sbyte> trits = stackalloc sbyte[BlockSize];
        for (int ib = 0; ib < nb; ib++)
        {
            Span<byte> block = blocks.Slice(ib * BlockBytes, BlockBytes);
            ushort d = TernaryQuantizer.Fit(values.Slice(ib * BlockSize, BlockSize),
                importance.IsEmpty ? default : importance.Slice(ib * BlockSize, BlockSize), trits);
            for (int h = 0; h < 2; h++)
                for (int m = 0; m < 32; m++)
                {
                    int packed = 0;
                    for (int l = 0; l < 4; l++) packed |= (trits[128 * h + 32 * l + m] + 1) << (2 * l);
                    block[32 * h + m] = (byte)packed;
                }
            BinaryPrimitives.WriteUInt16LittleEndian(block[ScaleOffset..], d);
        }
    }

    public override unsafe float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(GgmlType.TQ2_0, BlockSize, BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            return KernelDispatch.UpToAvx2(path) switch
            {
                KernelPath.Avx2 => DotAvx2(w, a, nb),
                KernelPath.Portable => DotPortable(w, a, nb),
                _ => DotScalar(w, a, nb),
            };
        }
    }

    private static unsafe float DotScalar(byte* w, byte* a, int nb)
    {
        float sum = 0;
        for (int ib = 0; ib < nb; ib++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            int sumi = 0;
            for (int h = 0; h < 2; h++)
                for (int l = 0; l < 4; l++)
                    for (int m = 0; m < 32; m++)
                        sumi += q8[128 * h + 32 * l + m] * (((w[32 * h + m] >> (2 * l)) & 3) - 1);
            sum += sumi * (Fp16.Lookup(*(ushort*)(w + ScaleOffset)) * *(float*)(a + Q8KLayout.ScaleOffset));
        }
        return sum;
    }

    private static unsafe float DotPortable(byte* w, byte* a, int nb)
    {
        Vector128<byte> three = Vector128.Create((byte)3);
        float sum = 0;
        for (int ib = 0; ib < nb; ib++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            Vector128<int> sumi = Vector128<int>.Zero;
            for (int h = 0; h < 4; h++)
            {
                // Bytes 16h..16h+15 hold values 128(h/2) + 32l + 16(h%2) + m for l = 0..3.
                Vector128<byte> q = Vector128.Load(w + 16 * h);
                sbyte* q8h = q8 + 128 * (h / 2) + 16 * (h % 2);
                for (int l = 0; l < 4; l++)
                    sumi += Int8Simd.DotPortable(Vector128.ShiftRightLogical(q, 2 * l) & three, Vector128.Load(q8h + 32 * l));
            }
            int offset = Q8KLayout.QuantSum(a);
            sum += (Vector128.Sum(sumi) - offset) * (Fp16.Lookup(*(ushort*)(w + ScaleOffset)) * *(float*)(a + Q8KLayout.ScaleOffset));
        }
        return sum;
    }

    private static unsafe float DotAvx2(byte* w, byte* a, int nb)
    {
        Vector256<byte> three = Vector256.Create((byte)3);
        Vector256<short> ones = Vector256.Create((short)1);
        Vector256<float> acc = Vector256<float>.Zero;
        for (int ib = 0; ib < nb; ib++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            Vector256<short> p = Vector256<short>.Zero;
            for (int h = 0; h < 2; h++)
            {
                Vector256<ushort> q = Avx.LoadVector256(w + 32 * h).AsUInt16();
                sbyte* q8h = q8 + 128 * h;
                // Each 16-bit lane gathers at most 8 pair sums of 2·3·128: no overflow.
                p += Avx2.MultiplyAddAdjacent(q.AsByte() & three, Avx.LoadVector256(q8h));
                p += Avx2.MultiplyAddAdjacent(Avx2.ShiftRightLogical(q, 2).AsByte() & three, Avx.LoadVector256(q8h + 32));
                p += Avx2.MultiplyAddAdjacent(Avx2.ShiftRightLogical(q, 4).AsByte() & three, Avx.LoadVector256(q8h + 64));
                p += Avx2.MultiplyAddAdjacent(Avx2.ShiftRightLogical(q, 6).AsByte() & three, Avx.LoadVector256(q8h + 96));
            }
            // Codes are value + 1: subtract the activation sum (from bsums) once per block.
            Vector256<int> sums = Avx2.MultiplyAddAdjacent(p, ones) - Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(a + Q8KLayout.SumsOffset)), ones);
            float d = Fp16.Lookup(*(ushort*)(w + ScaleOffset)) * *(float*)(a + Q8KLayout.ScaleOffset);
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(sums), acc);
        }
        return Vector256.Sum(acc);
    }
}
