using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// Q6_K: 256 values in 210 bytes (6.5625 bits). <c>u8 ql[128]; u8 qh[64]; i8 scales[16]; fp16 d</c>. Sixteen
/// 16-value groups decode as d·sc·(q − 32) with 6-bit q: per 128 values, ql byte l holds the low nibbles of values
/// l and l+64, ql byte l+32 those of l+32 and l+96, and qh byte l the top 2 bits of l, l+32, l+64, l+96.
/// </summary>
public sealed class Q6_KFormat : WeightFormat
{
    internal const int BlockBytes = 210;
    internal const int LowOffset = 0;
    internal const int HighOffset = 128;
    internal const int ScalesOffset = 192;
    internal const int DOffset = 208;

    public override GgmlType Type => GgmlType.Q6_K;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => KQuantBlocks.DotPathsWithAvx512;

    /// <summary>The 6-bit level (0–63) of value <paramref name="i"/> (0–255) of a block.</summary>
    internal static int Level(ReadOnlySpan<byte> block, int i)
    {
        int half = i >> 7, slice = (i >> 5) & 3, l = i & 31;
        int low = block[LowOffset + 64 * half + 32 * (slice & 1) + l] >> (4 * (slice >> 1)) & 0xF;
        int high = (block[HighOffset + 32 * half + l] >> (2 * slice)) & 3;
        return low | (high << 4);
    }

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int count = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        if (KQuantDecode.IsAccelerated) DequantizeAvx2(blocks, values, count);
        else DequantizeScalar(blocks, values, count);
    }

    /// <summary>The reference decoder, ggml's dequantize_row_q6_k value for value.</summary>
    internal static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values, int count)
    {
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            Span<float> y = values.Slice(i * KQuantBlocks.SuperBlock, KQuantBlocks.SuperBlock);
            float d = KQuantBlocks.ReadHalf(block, DOffset);
            for (int half = 0; half < 2; half++)
            {
                ReadOnlySpan<byte> ql = block.Slice(LowOffset + 64 * half, 64), qh = block.Slice(HighOffset + 32 * half, 32);
                ReadOnlySpan<byte> sc = block.Slice(ScalesOffset + 8 * half, 8);
                Span<float> yh = y.Slice(128 * half, 128);
                for (int l = 0; l < 32; l++)
                {
                    int g = l >> 4;
                    yh[l] = d * (sbyte)sc[g] * (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
                    yh[l + 32] = d * (sbyte)sc[g + 2] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                    yh[l + 64] = d * (sbyte)sc[g + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                    yh[l + 96] = d * (sbyte)sc[g + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe void DequantizeAvx2(ReadOnlySpan<byte> blocks, Span<float> values, int count)
    {
        fixed (byte* bp = blocks)
        fixed (float* yp = values)
        {
            Vector128<byte> low4 = Vector128.Create((byte)0x0F), low2 = Vector128.Create((byte)0x03), bias = Vector128.Create((byte)32);
            for (int i = 0; i < count; i++)
            {
                byte* block = bp + (long)i * BlockBytes;
                float* y = yp + (long)i * KQuantBlocks.SuperBlock;
                float d = KQuantBlocks.ReadHalf(block + DOffset);
                sbyte* sc = (sbyte*)(block + ScalesOffset);
                for (int half = 0; half < 2; half++)
                {
                    for (int h = 0; h < 2; h++)
                    {
                        Vector128<byte> ql0 = Sse2.LoadVector128(block + LowOffset + 64 * half + 16 * h);
                        Vector128<byte> ql1 = Sse2.LoadVector128(block + LowOffset + 64 * half + 32 + 16 * h);
                        Vector128<byte> qh = Sse2.LoadVector128(block + HighOffset + 32 * half + 16 * h);
                        Vector128<byte> q0 = (ql0 & low4) | ((qh & low2) << 4);
                        Vector128<byte> q1 = (ql1 & low4) | (((qh >>> 2) & low2) << 4);
                        Vector128<byte> q2 = (ql0 >>> 4) | (((qh >>> 4) & low2) << 4);
                        Vector128<byte> q3 = (ql1 >>> 4) | ((qh >>> 6) << 4);
                        int g = 8 * half + h;
                        float* yh = y + 128 * half + 16 * h;
                        KQuantDecode.StoreScaled16((q0 - bias).AsSByte(), d * sc[g], yh);
                        KQuantDecode.StoreScaled16((q1 - bias).AsSByte(), d * sc[g + 2], yh + 32);
                        KQuantDecode.StoreScaled16((q2 - bias).AsSByte(), d * sc[g + 4], yh + 64);
                        KQuantDecode.StoreScaled16((q3 - bias).AsSByte(), d * sc[g + 6], yh + 96);
                    }
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int count = KQuantBlocks.CheckRow(Layout, values, blocks.Length, importance);
        Span<sbyte> levels = stackalloc sbyte[KQuantBlocks.SuperBlock];
        Span<float> scales = stackalloc float[16];
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<float> x = values.Slice(i * KQuantBlocks.SuperBlock, KQuantBlocks.SuperBlock);
            Span<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            float maxScale = 0, maxAbsScale = 0;
            for (int g = 0; g < 16; g++)
            {
                // With importance the group fit is weighted by it directly; without, by x² (as ggml).
                ReadOnlySpan<float> weights = importance.IsEmpty ? default : importance.Slice(i * KQuantBlocks.SuperBlock + 16 * g, 16);
                scales[g] = KQuantSearch.Symmetric(x.Slice(16 * g, 16), 32, levels.Slice(16 * g, 16), weights);
                if (MathF.Abs(scales[g]) > maxAbsScale)
                {
                    maxAbsScale = MathF.Abs(scales[g]);
                    maxScale = scales[g];
                }
            }
            block.Clear();
            if (maxAbsScale < KQuantBlocks.GroupMaxEps) continue;

            float iscale = -128f / maxScale;
            KQuantBlocks.WriteHalf(block, DOffset, 1 / iscale);
            float d = KQuantBlocks.RoundToHalf(1 / iscale);
            for (int g = 0; g < 16; g++)
            {
                int sc = Math.Min(127, QuantMath.NearestInt(iscale * scales[g]));
                block[ScalesOffset + g] = (byte)(sbyte)sc;
                float step = d * (sbyte)sc;
                if (step == 0) continue;
                for (int l = 0; l < 16; l++)
                    levels[16 * g + l] = (sbyte)(Math.Clamp(QuantMath.NearestInt(x[16 * g + l] / step), -32, 31) + 32);
            }
            for (int half = 0; half < 2; half++)
            {
                for (int l = 0; l < 32; l++)
                {
                    int v = 128 * half + l;
                    int q0 = levels[v], q1 = levels[v + 32], q2 = levels[v + 64], q3 = levels[v + 96];
                    block[LowOffset + 64 * half + l] = (byte)((q0 & 0xF) | ((q2 & 0xF) << 4));
                    block[LowOffset + 64 * half + 32 + l] = (byte)((q1 & 0xF) | ((q3 & 0xF) << 4));
                    block[HighOffset + 32 * half + l] = (byte)((q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6));
                }
            }
        }
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        return DotOn(weights, activations, n, KernelDispatch.UpToAvx512(path, vnni: false));
    }

    internal override float DotUnchecked(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        DotOn(weights, activations, n, path);

    private float DotOn(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        // Constants rather than the format's layout: the check runs once per row, and the layout lookups and a
        // division by a non-constant block size cost more than a tenth of a 4096-value row's dot.
        int count = RowGuard.Dot(GgmlType.Q6_K, Q8KLayout.BlockSize, BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        return path switch
        {
            KernelPath.Avx512 => Q6_KDot.WithAvx512(weights, activations, count),
            KernelPath.Avx2 or KernelPath.AvxVnni => Q6_KDot.WithAvx2(weights, activations, count),
            KernelPath.Portable => Q6_KDot.WithVector128(weights, activations, count),
            _ => Q6_KDot.Scalar(weights, activations, count),
        };
    }
}
