using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// Q2_K: 256 values in 84 bytes (2.625 bits). <c>u8 scales[16]; u8 qs[64]; fp16 d; fp16 dmin</c>. Sixteen
/// 16-value groups decode as d·sc·q − dmin·m with 4-bit sc (low nibble) and m (high nibble) and 2-bit q: per 128
/// values, qs byte l holds values l, l+32, l+64 and l+96 in bit pairs 0–1, 2–3, 4–5 and 6–7.
/// </summary>
public sealed class Q2_KFormat : WeightFormat
{
    internal const int BlockBytes = 84;
    internal const int ScalesOffset = 0;
    internal const int LevelsOffset = 16;
    internal const int DOffset = 80;
    internal const int DMinOffset = 82;

    public override GgmlType Type => GgmlType.Q2_K;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => KQuantBlocks.DotPathsWithAvx512;

    /// <summary>The 2-bit level of value <paramref name="i"/> (0–255) of a block.</summary>
    internal static int Level(ReadOnlySpan<byte> block, int i) =>
        (block[LevelsOffset + 32 * (i >> 7) + (i & 31)] >> (2 * ((i >> 5) & 3))) & 3;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int count = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        if (KQuantDecode.IsAccelerated) DequantizeAvx2(blocks, values, count);
        else DequantizeScalar(blocks, values, count);
    }

    /// <summary>The reference decoder, ggml's dequantize_row_q2_k value for value.</summary>
    internal static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values, int count)
    {
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            Span<float> y = values.Slice(i * KQuantBlocks.SuperBlock, KQuantBlocks.SuperBlock);
            float d = KQuantBlocks.ReadHalf(block, DOffset);
            float dmin = KQuantBlocks.ReadHalf(block, DMinOffset);
            for (int g = 0; g < 16; g++)
            {
                int sc = block[ScalesOffset + g];
                float step = d * (sc & 0xF), offset = dmin * (sc >> 4);
                // Group g: values 16g…16g+15 are bit pair (g/2)%4 of qs bytes 32·(g/8) + 16·(g%2) + l.
                ReadOnlySpan<byte> q = block.Slice(LevelsOffset + 32 * (g >> 3) + 16 * (g & 1), 16);
                int shift = 2 * ((g >> 1) & 3);
                Span<float> yg = y.Slice(16 * g, 16);
                for (int l = 0; l < 16; l++) yg[l] = step * ((q[l] >> shift) & 3) - offset;
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe void DequantizeAvx2(ReadOnlySpan<byte> blocks, Span<float> values, int count)
    {
        fixed (byte* bp = blocks)
        fixed (float* yp = values)
        {
            Vector128<byte> low2 = Vector128.Create((byte)0x03);
            for (int i = 0; i < count; i++)
            {
                byte* block = bp + (long)i * BlockBytes;
                float* y = yp + (long)i * KQuantBlocks.SuperBlock;
                float d = KQuantBlocks.ReadHalf(block + DOffset), dmin = KQuantBlocks.ReadHalf(block + DMinOffset);
                for (int g = 0; g < 16; g++)
                {
                    int sc = block[ScalesOffset + g];
                    Vector128<byte> bits = Sse2.LoadVector128(block + LevelsOffset + 32 * (g >> 3) + 16 * (g & 1));
                    Vector128<byte> levels = (bits >>> (2 * ((g >> 1) & 3))) & low2;
                    KQuantDecode.StoreAffine16(levels, d * (sc & 0xF), dmin * (sc >> 4), y + 16 * g);
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int count = KQuantBlocks.CheckRow(Layout, values, blocks.Length, importance);
        Span<byte> levels = stackalloc byte[KQuantBlocks.SuperBlock];
        Span<byte> scratch = stackalloc byte[16];
        Span<float> weights = stackalloc float[16];
        Span<float> scales = stackalloc float[16];
        Span<float> mins = stackalloc float[16];
        Span<float> weightSums = stackalloc float[16];
        Span<byte> scaleLevels = stackalloc byte[16];
        Span<byte> minLevels = stackalloc byte[16];
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<float> x = values.Slice(i * KQuantBlocks.SuperBlock, KQuantBlocks.SuperBlock);
            Span<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            float d, dmin;
            if (importance.IsEmpty)
            {
                // ggml's quantize_row_q2_K_ref: |x|-weighted absolute-error fits, scales and mins on a max-based 4-bit grid.
                float maxScale = 0, maxMin = 0;
                for (int g = 0; g < 16; g++)
                {
                    ReadOnlySpan<float> xs = x.Slice(16 * g, 16);
                    for (int l = 0; l < 16; l++) weights[l] = MathF.Abs(xs[l]);
                    scales[g] = KQuantSearch.Affine(xs, 3, weights, levels.Slice(16 * g, 16), scratch, out mins[g], -0.5f, 0.1f, 15, absoluteError: true);
                    maxScale = MathF.Max(maxScale, scales[g]);
                    maxMin = MathF.Max(maxMin, mins[g]);
                }
                float inverseScale = maxScale > 0 ? 15f / maxScale : 0f;
                float inverseMin = maxMin > 0 ? 15f / maxMin : 0f;
                for (int g = 0; g < 16; g++)
                {
                    scaleLevels[g] = (byte)QuantMath.NearestInt(inverseScale * scales[g]);
                    minLevels[g] = (byte)QuantMath.NearestInt(inverseMin * mins[g]);
                }
                d = maxScale / 15f;
                dmin = maxMin / 15f;
            }
            else
            {
                // ggml's quantize_row_q2_K_impl: importance·√(σ² + x²) weights, then least-squares fits of the 4-bit scales and mins.
                float sumX2 = 0;
                for (int l = 0; l < KQuantBlocks.SuperBlock; l++) sumX2 += x[l] * x[l];
                float sigma2 = sumX2 / KQuantBlocks.SuperBlock;
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
                    scales[g] = KQuantSearch.Affine(xs, 3, weights, levels.Slice(16 * g, 16), scratch, out mins[g], -0.9f, 0.05f, 36, absoluteError: false);
                }
                d = KQuantSearch.Positive(scales, 15, scaleLevels, weightSums);
                dmin = KQuantSearch.Positive(mins, 15, minLevels, weightSums);
            }
            KQuantBlocks.WriteHalf(block, DOffset, d);
            KQuantBlocks.WriteHalf(block, DMinOffset, dmin);
            d = KQuantBlocks.RoundToHalf(d);
            dmin = KQuantBlocks.RoundToHalf(dmin);
            for (int g = 0; g < 16; g++)
            {
                int packed = (scaleLevels[g] & 0xF) | ((minLevels[g] & 0xF) << 4);
                block[ScalesOffset + g] = (byte)packed;
                float step = d * (packed & 0xF);
                if (step == 0) continue;
                float offset = dmin * (packed >> 4);
                for (int l = 0; l < 16; l++)
                    levels[16 * g + l] = (byte)Math.Clamp(QuantMath.NearestInt((x[16 * g + l] + offset) / step), 0, 3);
            }
            for (int half = 0; half < 2; half++)
                for (int l = 0; l < 32; l++)
                {
                    int v = 128 * half + l;
                    block[LevelsOffset + 32 * half + l] = (byte)(levels[v] | (levels[v + 32] << 2) | (levels[v + 64] << 4) | (levels[v + 96] << 6));
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
        int count = RowGuard.Dot(GgmlType.Q2_K, Q8KLayout.BlockSize, BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        return path switch
        {
            KernelPath.Avx512 => Q2_KDot.WithAvx512(weights, activations, count),
            KernelPath.Avx2 or KernelPath.AvxVnni => Q2_KDot.WithAvx2(weights, activations, count),
            KernelPath.Portable => Q2_KDot.WithVector128(weights, activations, count),
            _ => Q2_KDot.Scalar(weights, activations, count),
        };
    }
}
