using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// IQ4_XS: super-blocks of 256 values, <c>f16 d; uint16 scales_h; uint8 scales_l[4]; uint8 qs[128]</c>. Each group
/// of 32 has a 6-bit scale ls (low 4 bits in scales_l, high 2 in scales_h) and value = d·(ls−32)·level[nibble],
/// nibbles packed as in IQ4_NL. Dots with Q8_K activations.
/// </summary>
public sealed class IQ4_XSFormat : WeightFormat
{
    private const int BlockSize = 256;
    private const int BlockBytes = 136;
    private const int ScalesHighOffset = 2;
    private const int ScalesLowOffset = 4;
    private const int QuantsOffset = 8;

    public override GgmlType Type => GgmlType.IQ4_XS;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2, KernelPath.Avx512];

    /// <summary>The signed 6-bit scale (ls − 32) of group <paramref name="ib"/> of a super-block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe int GroupScale(byte* block, int ib)
    {
        int low = (block[ScalesLowOffset + ib / 2] >> (4 * (ib % 2))) & 0xF;
        int high = (*(ushort*)(block + ScalesHighOffset) >> (2 * ib)) & 3;
        return (low | (high << 4)) - 32;
    }

    public override unsafe void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        sbyte[] levels = Iq4NonLinear.Levels;
        fixed (byte* start = blocks)
        {
            for (int ibl = 0; ibl < nb; ibl++)
            {
                byte* block = start + ibl * BlockBytes;
                float d = Fp16.Lookup(*(ushort*)block);
                Span<float> y = values.Slice(ibl * BlockSize, BlockSize);
                for (int ib = 0; ib < 8; ib++)
                {
                    float dl = d * GroupScale(block, ib);
                    byte* q4 = block + QuantsOffset + 16 * ib;
                    for (int j = 0; j < 16; j++)
                    {
                        y[32 * ib + j] = dl * levels[q4[j] & 0xF];
                        y[32 * ib + j + 16] = dl * levels[q4[j] >> 4];
                    }
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Quantize(Layout, values, blocks.Length, importance);
        Span<float> weights = stackalloc float[BlockSize];
        Span<float> metric = stackalloc float[BlockSize];
        Span<float> scales = stackalloc float[8];
        Span<byte> indices = stackalloc byte[32];
        Span<byte> trial = stackalloc byte[32];
        for (int ibl = 0; ibl < nb; ibl++)
        {
            ReadOnlySpan<float> x = values.Slice(ibl * BlockSize, BlockSize);
            ReadOnlySpan<float> imp = importance.IsEmpty ? default : importance.Slice(ibl * BlockSize, BlockSize);
            Span<byte> block = blocks.Slice(ibl * BlockBytes, BlockBytes);
            block.Clear();
            ImportanceFit.Weights(x, imp, ImportanceFit.Sigma2(x), weights);
            Iq4NonLinear.MetricWeights(imp, metric);

            float maxScale = 0;
            for (int ib = 0; ib < 8; ib++)
            {
                scales[ib] = Iq4NonLinear.BestScale(x.Slice(32 * ib, 32), weights.Slice(32 * ib, 32), metric.Slice(32 * ib, 32), trial);
                if (MathF.Abs(scales[ib]) > MathF.Abs(maxScale)) maxScale = scales[ib];
            }

            // The largest group scale maps to ls−32 = −32, the widest 6-bit step, keeping its sign.
            ushort dBits = Fp16.FromSingle(-maxScale / 32);
            float d = Fp16.Lookup(dBits);
            BinaryPrimitives.WriteUInt16LittleEndian(block, dBits);
            float inverse = d != 0 ? 1 / d : 0;
            ushort scalesHigh = 0;
            for (int ib = 0; ib < 8; ib++)
            {
                ReadOnlySpan<float> xb = x.Slice(32 * ib, 32);
                ReadOnlySpan<float> wb = metric.Slice(32 * ib, 32);
                int nearest = Math.Clamp(QuantMath.RoundHalfToEven(inverse * scales[ib]), -32, 31);
                // Rounding the group scale to d's grid moves the level boundaries; the neighbouring steps sometimes fit better.
                int best = nearest;
                float bestError = float.MaxValue;
                for (int l = Math.Max(-32, nearest - 1); l <= Math.Min(31, nearest + 1); l++)
                {
                    float error = Iq4NonLinear.Assign(xb, wb, d * l, trial);
                    if (error < bestError)
                    {
                        bestError = error;
                        best = l;
                        trial.CopyTo(indices);
                    }
                }
                int ls = best + 32;
                block[ScalesLowOffset + ib / 2] |= (byte)((ls & 0xF) << (4 * (ib % 2)));
                scalesHigh |= (ushort)((ls >> 4) << (2 * ib));
                Iq4NonLinear.Pack32(indices, block.Slice(QuantsOffset + 16 * ib, 16));
            }
            BinaryPrimitives.WriteUInt16LittleEndian(block[ScalesHighOffset..], scalesHigh);
        }
    }

    public override unsafe float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        return DotOn(weights, activations, n, KernelDispatch.UpToAvx512(path, vnni: false));
    }

    internal override float DotUnchecked(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        DotOn(weights, activations, n, path);

    private static unsafe float DotOn(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(GgmlType.IQ4_XS, BlockSize, BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            return path switch
            {
                KernelPath.Avx512 => DotAvx512(w, a, nb),
                KernelPath.Avx2 or KernelPath.AvxVnni => DotAvx2(w, a, nb),
                KernelPath.Portable => DotPortable(w, a, nb),
                _ => DotScalar(w, a, nb),
            };
        }
    }

    private static unsafe float DotScalar(byte* w, byte* a, int nb)
    {
        sbyte[] levels = Iq4NonLinear.Levels;
        float sum = 0;
        for (int ibl = 0; ibl < nb; ibl++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            int sumi = 0;
            for (int ib = 0; ib < 8; ib++)
            {
                byte* q4 = w + QuantsOffset + 16 * ib;
                int group = 0;
                for (int j = 0; j < 16; j++)
                    group += q8[32 * ib + j] * levels[q4[j] & 0xF] + q8[32 * ib + j + 16] * levels[q4[j] >> 4];
                sumi += group * GroupScale(w, ib);
            }
            sum += Fp16.Lookup(*(ushort*)w) * *(float*)(a + Q8KLayout.ScaleOffset) * sumi;
        }
        return sum;
    }

    private static unsafe float DotPortable(byte* w, byte* a, int nb)
    {
        Vector128<sbyte> table = Iq4NonLinear.LevelTable;
        Vector128<byte> lowNibble = Vector128.Create((byte)0x0F);
        float sum = 0;
        for (int ibl = 0; ibl < nb; ibl++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            Vector128<int> sumi = Vector128<int>.Zero;
            for (int ib = 0; ib < 8; ib++)
            {
                Vector128<byte> q4 = Vector128.Load(w + QuantsOffset + 16 * ib);
                Vector128<sbyte> lo = Vector128.ShuffleNative(table, (q4 & lowNibble).AsSByte());
                Vector128<sbyte> hi = Vector128.ShuffleNative(table, Vector128.ShiftRightLogical(q4, 4).AsSByte());
                Vector128<int> group = Int8Simd.DotPortable(lo, Vector128.Load(q8 + 32 * ib)) + Int8Simd.DotPortable(hi, Vector128.Load(q8 + 32 * ib + 16));
                sumi += group * GroupScale(w, ib);
            }
            sum += Fp16.Lookup(*(ushort*)w) * *(float*)(a + Q8KLayout.ScaleOffset) * Vector128.Sum(sumi);
        }
        return sum;
    }

    private static unsafe float DotAvx2(byte* w, byte* a, int nb)
    {
        Vector256<float> acc = Vector256<float>.Zero;
        for (int ibl = 0; ibl < nb; ibl++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            byte* q4 = w + QuantsOffset;
            // All eight 6-bit scales at once: low nibbles from scales_l, high pairs from scales_h, then minus 32.
            uint sl = *(uint*)(w + ScalesLowOffset);
            uint sh = *(ushort*)(w + ScalesHighOffset);
            Vector256<int> scales = (Avx2.ShiftRightLogicalVariable(Vector256.Create(sl), LowScaleShift).AsInt32() & Vector256.Create(0xF))
                | ((Avx2.ShiftRightLogicalVariable(Vector256.Create(sh), HighScaleShift).AsInt32() & Vector256.Create(3)) << 4);
            scales -= Vector256.Create(32);
            // Each lane holds its scale in both 16-bit halves, the form vpmaddwd multiplies pairs of products by.
            scales = (scales & Vector256.Create(0xFFFF)) | (scales << 16);
            // Groups 0-3's scales in both lanes, then 4-7's: each group's broadcast is then an in-lane vpshufd with a
            // constant control, cheaper than a lane-crossing vpermd per group.
            Vector256<int> first = Avx2.Permute2x128(scales, scales, 0x00), second = Avx2.Permute2x128(scales, scales, 0x11);
            Vector256<int> sum0 = Group(q4, q8, Avx2.Shuffle(first, 0x00));
            Vector256<int> sum1 = Group(q4 + 16, q8 + 32, Avx2.Shuffle(first, 0x55));
            sum0 += Group(q4 + 32, q8 + 64, Avx2.Shuffle(first, 0xAA));
            sum1 += Group(q4 + 48, q8 + 96, Avx2.Shuffle(first, 0xFF));
            sum0 += Group(q4 + 64, q8 + 128, Avx2.Shuffle(second, 0x00));
            sum1 += Group(q4 + 80, q8 + 160, Avx2.Shuffle(second, 0x55));
            sum0 += Group(q4 + 96, q8 + 192, Avx2.Shuffle(second, 0xAA));
            sum1 += Group(q4 + 112, q8 + 224, Avx2.Shuffle(second, 0xFF));
            float d = Fp16.Lookup(*(ushort*)w) * *(float*)(a + Q8KLayout.ScaleOffset);
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(sum0 + sum1), acc);
        }
        return Vector256.Sum(acc);
    }

    /// <summary>One group of 32: decode levels by table shuffle, multiply with the activations, scale by the group's ls−32 (in every lane of <paramref name="scale"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<int> Group(byte* q4, sbyte* q8, Vector256<int> scale)
    {
        Vector256<short> products = Int8Simd.PairProductsAvx2(Levels(q4), Avx.LoadVector256(q8));
        return Avx2.MultiplyAddAdjacent(products, scale.AsInt16());
    }

    /// <summary>The 32 levels of one group: low lane from the 16 low nibbles (values 0..15), high lane from the high ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<sbyte> Levels(byte* q4)
    {
        Vector256<byte> packed = Avx2.BroadcastVector128ToVector256(q4);
        Vector256<byte> idx = Avx2.ShiftRightLogicalVariable(packed.AsUInt32(), Vector256.Create(0u, 0, 0, 0, 4, 4, 4, 4)).AsByte() & Vector256.Create((byte)0x0F);
        return Avx2.Shuffle(Vector256.Create(Iq4NonLinear.LevelTable, Iq4NonLinear.LevelTable), idx.AsSByte());
    }

    /// <summary>AVX-512: as <see cref="DotAvx2"/>, two groups (64 values) per 512-bit multiply.</summary>
    private static unsafe float DotAvx512(byte* w, byte* a, int nb)
    {
        Vector256<float> acc = Vector256<float>.Zero;
        for (int ibl = 0; ibl < nb; ibl++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            byte* q4 = w + QuantsOffset;
            uint sl = *(uint*)(w + ScalesLowOffset);
            uint sh = *(ushort*)(w + ScalesHighOffset);
            Vector256<int> scales = (Avx2.ShiftRightLogicalVariable(Vector256.Create(sl), LowScaleShift).AsInt32() & Vector256.Create(0xF))
                | ((Avx2.ShiftRightLogicalVariable(Vector256.Create(sh), HighScaleShift).AsInt32() & Vector256.Create(3)) << 4);
            scales -= Vector256.Create(32);
            scales = (scales & Vector256.Create(0xFFFF)) | (scales << 16);
            Vector512<int> sum = (GroupPair(q4, q8, scales, 0) + GroupPair(q4, q8, scales, 2)) + (GroupPair(q4, q8, scales, 4) + GroupPair(q4, q8, scales, 6));
            float d = Fp16.Lookup(*(ushort*)w) * *(float*)(a + Q8KLayout.ScaleOffset);
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(Int8SimdWide.Fold(sum)), acc);
        }
        return Vector256.Sum(acc);
    }

    /// <summary>Groups g and g+1 in one 512-bit register, each half scaled by its group's ls−32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector512<int> GroupPair(byte* q4, sbyte* q8, Vector256<int> scales, int g)
    {
        Vector512<sbyte> levels = Vector512.Create(Levels(q4 + 16 * g), Levels(q4 + 16 * g + 16));
        Vector512<short> products = Int8SimdWide.PairProducts(levels, Vector512.Load(q8 + 32 * g));
        Vector512<int> scale = Vector512.Create(Avx2.PermuteVar8x32(scales, Vector256.Create(g)), Avx2.PermuteVar8x32(scales, Vector256.Create(g + 1)));
        return Int8SimdWide.MultiplyAddAdjacent(products, scale.AsInt16());
    }

    private static readonly Vector256<uint> LowScaleShift = Vector256.Create(0u, 4, 8, 12, 16, 20, 24, 28);
    private static readonly Vector256<uint> HighScaleShift = Vector256.Create(0u, 2, 4, 6, 8, 10, 12, 14);
}
