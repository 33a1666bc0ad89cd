using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// IQ4_NL: blocks of 32 values, <c>f16 d; uint8 qs[16]</c>; value j is d × level[nibble], with byte j's low nibble
/// for value j and its high nibble for value j+16. llama.cpp's fallback for rows that are not whole 256-blocks.
/// Dots with Q8_0 activations.
/// </summary>
public sealed class IQ4_NLFormat : WeightFormat
{
    private const int BlockSize = 32;
    private const int BlockBytes = 18;

    public override GgmlType Type => GgmlType.IQ4_NL;
    public override GgmlType DotActivationType => GgmlType.Q8_0;
    public override IReadOnlyList<KernelPath> ImplementedPaths => [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        sbyte[] levels = Iq4NonLinear.Levels;
        for (int ib = 0; ib < nb; ib++)
        {
            ReadOnlySpan<byte> block = blocks.Slice(ib * BlockBytes, BlockBytes);
            float d = Fp16.Lookup(BinaryPrimitives.ReadUInt16LittleEndian(block));
            Span<float> y = values.Slice(ib * BlockSize, BlockSize);
            for (int j = 0; j < 16; j++)
            {
                byte q = block[2 + j];
                y[j] = d * levels[q & 0xF];
                y[j + 16] = d * levels[q >> 4];
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Quantize(Layout, values, blocks.Length, importance);
        Span<float> weights = stackalloc float[BlockSize];
        Span<float> metric = stackalloc float[BlockSize];
        Span<byte> indices = stackalloc byte[BlockSize];
        for (int ib = 0; ib < nb; ib++)
        {
            ReadOnlySpan<float> x = values.Slice(ib * BlockSize, BlockSize);
            ReadOnlySpan<float> imp = importance.IsEmpty ? default : importance.Slice(ib * BlockSize, BlockSize);
            Span<byte> block = blocks.Slice(ib * BlockBytes, BlockBytes);
            ImportanceFit.Weights(x, imp, ImportanceFit.Sigma2(x), weights);
            Iq4NonLinear.MetricWeights(imp, metric);
            float scale = Iq4NonLinear.BestScale(x, weights, metric, indices);
            ushort dBits = Fp16.FromSingle(scale);
            // Levels are assigned under the stored (f16-rounded) scale, the one dequantization will use.
            Iq4NonLinear.Assign(x, weights, Fp16.Lookup(dBits), indices);
            BinaryPrimitives.WriteUInt16LittleEndian(block, dBits);
            Iq4NonLinear.Pack32(indices, block[2..]);
        }
    }

    public override unsafe float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(GgmlType.IQ4_NL, BlockSize, BlockBytes, Q8_0Layout.BlockBytes, weights.Length, activations.Length, n);
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
        sbyte[] levels = Iq4NonLinear.Levels;
        float sum = 0;
        for (int ib = 0; ib < nb; ib++, w += BlockBytes, a += Q8_0Layout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8_0Layout.QuantsOffset);
            byte* q4 = w + 2;
            int sumi = 0;
            for (int j = 0; j < 16; j++)
                sumi += q8[j] * levels[q4[j] & 0xF] + q8[j + 16] * levels[q4[j] >> 4];
            sum += Fp16.Lookup(*(ushort*)w) * Fp16.Lookup(*(ushort*)a) * sumi;
        }
        return sum;
    }

    private static unsafe float DotPortable(byte* w, byte* a, int nb)
    {
        Vector128<sbyte> table = Iq4NonLinear.LevelTable;
        Vector128<byte> lowNibble = Vector128.Create((byte)0x0F);
        float sum = 0;
        for (int ib = 0; ib < nb; ib++, w += BlockBytes, a += Q8_0Layout.BlockBytes)
        {
            Vector128<byte> q4 = Vector128.Load(w + 2);
            Vector128<sbyte> lo = Vector128.ShuffleNative(table, (q4 & lowNibble).AsSByte());
            Vector128<sbyte> hi = Vector128.ShuffleNative(table, Vector128.ShiftRightLogical(q4, 4).AsSByte());
            sbyte* q8 = (sbyte*)(a + Q8_0Layout.QuantsOffset);
            Vector128<int> sumi = Int8Simd.DotPortable(lo, Vector128.Load(q8)) + Int8Simd.DotPortable(hi, Vector128.Load(q8 + 16));
            sum += Fp16.Lookup(*(ushort*)w) * Fp16.Lookup(*(ushort*)a) * Vector128.Sum(sumi);
        }
        return sum;
    }

    private static unsafe float DotAvx2(byte* w, byte* a, int nb)
    {
        Vector256<sbyte> table = Vector256.Create(Iq4NonLinear.LevelTable, Iq4NonLinear.LevelTable);
        Vector256<uint> nibbleShift = Vector256.Create(0u, 0, 0, 0, 4, 4, 4, 4);
        Vector256<byte> lowNibble = Vector256.Create((byte)0x0F);
        Vector256<short> ones = Vector256.Create((short)1);
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = Vector256<float>.Zero;
        int ib = 0;
        for (; ib + 1 < nb; ib += 2, w += 2 * BlockBytes, a += 2 * Q8_0Layout.BlockBytes)
        {
            Vector256<int> s0 = Avx2.MultiplyAddAdjacent(Int8Simd.PairProductsAvx2(Levels32(w + 2), Avx.LoadVector256((sbyte*)(a + Q8_0Layout.QuantsOffset))), ones);
            Vector256<int> s1 = Avx2.MultiplyAddAdjacent(
                Int8Simd.PairProductsAvx2(Levels32(w + BlockBytes + 2), Avx.LoadVector256((sbyte*)(a + Q8_0Layout.BlockBytes + Q8_0Layout.QuantsOffset))), ones);
            float d0 = Fp16.Lookup(*(ushort*)w) * Fp16.Lookup(*(ushort*)a);
            float d1 = Fp16.Lookup(*(ushort*)(w + BlockBytes)) * Fp16.Lookup(*(ushort*)(a + Q8_0Layout.BlockBytes));
            acc0 = Fma.MultiplyAdd(Vector256.Create(d0), Avx.ConvertToVector256Single(s0), acc0);
            acc1 = Fma.MultiplyAdd(Vector256.Create(d1), Avx.ConvertToVector256Single(s1), acc1);
        }
        float sum = Vector256.Sum(acc0 + acc1);
        if (ib < nb) sum += DotScalar(w, a, 1);
        return sum;

        // The 32 signed levels of one block in value order: the low lane decodes low nibbles, the high lane high ones.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        Vector256<sbyte> Levels32(byte* q4)
        {
            Vector256<byte> packed = Avx2.BroadcastVector128ToVector256(q4);
            Vector256<byte> idx = Avx2.ShiftRightLogicalVariable(packed.AsUInt32(), nibbleShift).AsByte() & lowNibble;
            return Avx2.Shuffle(table, idx.AsSByte());
        }
    }
}
