using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// Q3_K: 256 values in 110 bytes (3.4375 bits). <c>u8 hmask[32]; u8 qs[64]; u8 scales[12]; fp16 d</c>. Sixteen
/// 16-value groups decode as d·(sc − 32)·q with 6-bit sc (see <see cref="KQuantScales"/>) and q in [−4, 3]:
/// the low 2 bits sit in qs as in Q2_K, and a clear bit in hmask (bit k of byte l for value 32k + l) subtracts 4.
/// </summary>
public sealed class Q3_KFormat : WeightFormat
{
    internal const int BlockBytes = 110;
    internal const int HighMaskOffset = 0;
    internal const int LevelsOffset = 32;
    internal const int ScalesOffset = 96;
    internal const int DOffset = 108;

    public override GgmlType Type => GgmlType.Q3_K;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => KQuantBlocks.DotPaths;

    /// <summary>The signed level (−4 … 3) of value <paramref name="i"/> (0–255) of a block.</summary>
    internal static int Level(ReadOnlySpan<byte> block, int i)
    {
        int low = (block[LevelsOffset + 32 * (i >> 7) + (i & 31)] >> (2 * ((i >> 5) & 3))) & 3;
        bool high = (block[HighMaskOffset + (i & 31)] & (1 << (i >> 5))) != 0;
        return high ? low : low - 4;
    }

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int count = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        if (KQuantDecode.IsAccelerated) DequantizeAvx2(blocks, values, count);
        else DequantizeScalar(blocks, values, count);
    }

    /// <summary>The reference decoder, ggml's dequantize_row_q3_k value for value.</summary>
    internal static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values, int count)
    {
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            Span<float> y = values.Slice(i * KQuantBlocks.SuperBlock, KQuantBlocks.SuperBlock);
            float d = KQuantBlocks.ReadHalf(block, DOffset);
            ReadOnlySpan<byte> scales = block.Slice(ScalesOffset, 12);
            for (int g = 0; g < 16; g++)
            {
                float step = d * KQuantScales.ReadQ3Scale(scales, g);
                // Group g: low bits are bit pair (g/2)%4 of qs bytes 32·(g/8) + 16·(g%2) + l, the high bit is bit g/2 of hmask byte 16·(g%2) + l.
                ReadOnlySpan<byte> q = block.Slice(LevelsOffset + 32 * (g >> 3) + 16 * (g & 1), 16);
                ReadOnlySpan<byte> hm = block.Slice(HighMaskOffset + 16 * (g & 1), 16);
                int shift = 2 * ((g >> 1) & 3), bit = g >> 1;
                Span<float> yg = y.Slice(16 * g, 16);
                for (int l = 0; l < 16; l++) yg[l] = step * (((q[l] >> shift) & 3) - (((hm[l] >> bit) & 1) ^ 1) * 4);
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe void DequantizeAvx2(ReadOnlySpan<byte> blocks, Span<float> values, int count)
    {
        fixed (byte* bp = blocks)
        fixed (float* yp = values)
        {
            Vector128<byte> low2 = Vector128.Create((byte)0x03), one = Vector128.Create((byte)0x01), four = Vector128.Create((byte)0x04);
            for (int i = 0; i < count; i++)
            {
                byte* block = bp + (long)i * BlockBytes;
                float* y = yp + (long)i * KQuantBlocks.SuperBlock;
                float d = KQuantBlocks.ReadHalf(block + DOffset);
                Vector128<sbyte> scales = (KQuantScales.UnpackQ3Scales(block + ScalesOffset) - Vector128.Create((byte)32)).AsSByte();
                for (int g = 0; g < 16; g++)
                {
                    Vector128<byte> bits = Sse2.LoadVector128(block + LevelsOffset + 32 * (g >> 3) + 16 * (g & 1));
                    Vector128<byte> highMask = Sse2.LoadVector128(block + HighMaskOffset + 16 * (g & 1));
                    Vector128<byte> low = (bits >>> (2 * ((g >> 1) & 3))) & low2;
                    Vector128<byte> high = (highMask >>> (g >> 1)) & one;
                    // q = low − 4 where the hmask bit is clear.
                    Vector128<sbyte> levels = (low - Sse2.AndNot(Sse2.ShiftLeftLogical(high.AsUInt16(), 2).AsByte(), four)).AsSByte();
                    KQuantDecode.StoreScaled16(levels, d * scales.GetElement(g), y + 16 * g);
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int count = KQuantBlocks.CheckRow(Layout, values, blocks.Length, importance);
        Span<sbyte> levels = stackalloc sbyte[KQuantBlocks.SuperBlock];
        Span<float> weights = stackalloc float[16];
        Span<float> scales = stackalloc float[16];
        Span<float> weightSums = stackalloc float[16];
        Span<sbyte> scaleLevels = stackalloc sbyte[16];
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<float> x = values.Slice(i * KQuantBlocks.SuperBlock, KQuantBlocks.SuperBlock);
            Span<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            block.Clear();
            Span<byte> packedScales = block.Slice(ScalesOffset, 12);
            float d;
            if (importance.IsEmpty)
            {
                // ggml's quantize_row_q3_K_ref: x²-weighted group fits refined level by level, scales on a max-based grid.
                float maxScale = 0, maxAbs = 0;
                for (int g = 0; g < 16; g++)
                {
                    scales[g] = KQuantSearch.SymmetricRefined(x.Slice(16 * g, 16), 4, levels.Slice(16 * g, 16));
                    if (MathF.Abs(scales[g]) > maxAbs)
                    {
                        maxAbs = MathF.Abs(scales[g]);
                        maxScale = scales[g];
                    }
                }
                if (maxScale != 0)
                {
                    float iscale = -32f / maxScale;
                    for (int g = 0; g < 16; g++)
                        scaleLevels[g] = (sbyte)(Math.Clamp((int)(sbyte)QuantMath.NearestInt(iscale * scales[g]), -32, 31) + 32);
                    d = 1 / iscale;
                }
                else
                {
                    scaleLevels.Clear();
                    d = 0;
                }
            }
            else
            {
                // ggml's quantize_row_q3_K_impl: importance·√(σ² + x²) weights; the 6-bit scales fitted by weighted least squares.
                float sumX2 = 0;
                for (int l = 0; l < KQuantBlocks.SuperBlock; l++) sumX2 += x[l] * x[l];
                float sigma2 = 2 * sumX2 / KQuantBlocks.SuperBlock;
                for (int g = 0; g < 16; g++)
                {
                    ReadOnlySpan<float> xs = x.Slice(16 * g, 16);
                    ReadOnlySpan<float> imp = importance.Slice(i * KQuantBlocks.SuperBlock + 16 * g, 16);
                    float sumW = 0;
                    for (int l = 0; l < 16; l++)
                    {
                        weights[l] = imp[l] * MathF.Sqrt(sigma2 + xs[l] * xs[l]);
                        sumW += weights[l];
                    }
                    weightSums[g] = sumW;
                    scales[g] = KQuantSearch.Symmetric(xs, 4, levels.Slice(16 * g, 16), weights);
                }
                d = KQuantSearch.Symmetric(scales, 32, scaleLevels, weightSums);
            }
            KQuantScales.WriteQ3Scales(System.Runtime.InteropServices.MemoryMarshal.Cast<sbyte, byte>(scaleLevels), packedScales);
            KQuantBlocks.WriteHalf(block, DOffset, d);
            d = KQuantBlocks.RoundToHalf(d);

            for (int g = 0; g < 16; g++)
            {
                float step = d * KQuantScales.ReadQ3Scale(packedScales, g);
                if (step == 0) continue;
                for (int l = 0; l < 16; l++)
                    levels[16 * g + l] = (sbyte)(Math.Clamp(QuantMath.NearestInt(x[16 * g + l] / step), -4, 3) + 4);
            }
            // Biased levels 0–7: bit 2 goes to hmask (bit k of byte l for value 32k + l), bits 0–1 to qs.
            for (int v = 0; v < KQuantBlocks.SuperBlock; v++)
            {
                if (levels[v] > 3)
                {
                    block[HighMaskOffset + (v & 31)] |= (byte)(1 << (v >> 5));
                    levels[v] -= 4;
                }
            }
            for (int half = 0; half < 2; half++)
                for (int l = 0; l < 32; l++)
                {
                    int v = 128 * half + l;
                    block[LevelsOffset + 32 * half + l] = (byte)((levels[v] & 3) | ((levels[v + 32] & 3) << 2) | ((levels[v + 64] & 3) << 4) | ((levels[v + 96] & 3) << 6));
                }
        }
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        // Constants rather than the format's layout: the check runs once per row, and the layout lookups and a
        // division by a non-constant block size cost more than a tenth of a 4096-value row's dot.
        int count = RowGuard.Dot(GgmlType.Q3_K, Q8KLayout.BlockSize, BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        return KernelDispatch.UpToAvx2(path) switch
        {
            KernelPath.Avx2 => Q3_KDot.WithAvx2(weights, activations, count),
            KernelPath.Portable => Q3_KDot.WithVector128(weights, activations, count),
            _ => Q3_KDot.Scalar(weights, activations, count),
        };
    }
}
