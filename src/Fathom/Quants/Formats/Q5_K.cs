using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// Q5_K: 256 values in 176 bytes (5.5 bits). <c>fp16 d; fp16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]</c>.
/// As Q4_K (d·sc·q − dmin·m per 32-value sub-block) with 5-bit q: the low nibbles in qs as in Q4_K and the fifth
/// bit of value 32k + l in bit k of qh byte l.
/// </summary>
public sealed class Q5_KFormat : WeightFormat
{
    internal const int BlockBytes = 176;
    internal const int DOffset = 0;
    internal const int DMinOffset = 2;
    internal const int ScalesOffset = 4;
    internal const int HighOffset = 16;
    internal const int LevelsOffset = 48;

    public override GgmlType Type => GgmlType.Q5_K;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => KQuantBlocks.DotPaths;

    /// <summary>The 5-bit level (0–31) of value <paramref name="i"/> (0–255) of a block.</summary>
    internal static int Level(ReadOnlySpan<byte> block, int i)
    {
        int sub = i >> 5, l = i & 31;
        int low = (block[LevelsOffset + 32 * (sub >> 1) + l] >> (4 * (sub & 1))) & 0xF;
        int high = (block[HighOffset + l] >> sub) & 1;
        return low | (high << 4);
    }

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int count = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        if (KQuantDecode.IsAccelerated) DequantizeAvx2(blocks, values, count);
        else DequantizeScalar(blocks, values, count);
    }

    /// <summary>The reference decoder, ggml's dequantize_row_q5_k value for value.</summary>
    internal static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values, int count)
    {
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            Span<float> y = values.Slice(i * KQuantBlocks.SuperBlock, KQuantBlocks.SuperBlock);
            float d = KQuantBlocks.ReadHalf(block, DOffset);
            float dmin = KQuantBlocks.ReadHalf(block, DMinOffset);
            ReadOnlySpan<byte> scales = block.Slice(ScalesOffset, 12);
            for (int sub = 0; sub < 8; sub++)
            {
                KQuantScales.ReadScaleMin(scales, sub, out int sc, out int m);
                float step = d * sc, offset = dmin * m;
                ReadOnlySpan<byte> q = block.Slice(LevelsOffset + 32 * (sub >> 1), 32), qh = block.Slice(HighOffset, 32);
                int shift = 4 * (sub & 1);
                Span<float> ys = y.Slice(32 * sub, 32);
                for (int l = 0; l < 32; l++) ys[l] = step * (((q[l] >> shift) & 0xF) | (((qh[l] >> sub) & 1) << 4)) - offset;
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe void DequantizeAvx2(ReadOnlySpan<byte> blocks, Span<float> values, int count)
    {
        fixed (byte* bp = blocks)
        fixed (float* yp = values)
        {
            Vector256<byte> lowNibble = Vector256.Create((byte)0x0F), bit4 = Vector256.Create((byte)0x10);
            for (int i = 0; i < count; i++)
            {
                byte* block = bp + (long)i * BlockBytes;
                float* y = yp + (long)i * KQuantBlocks.SuperBlock;
                float d = KQuantBlocks.ReadHalf(block + DOffset), dmin = KQuantBlocks.ReadHalf(block + DMinOffset);
                ReadOnlySpan<byte> scales = new(block + ScalesOffset, 12);
                Vector256<ushort> highBits = Avx.LoadVector256(block + HighOffset).AsUInt16();
                for (int chunk = 0; chunk < 4; chunk++)
                {
                    KQuantScales.ReadScaleMin(scales, 2 * chunk, out int sc0, out int m0);
                    KQuantScales.ReadScaleMin(scales, 2 * chunk + 1, out int sc1, out int m1);
                    Vector256<byte> bits = Avx.LoadVector256(block + LevelsOffset + 32 * chunk);
                    Vector256<byte> low = (bits & lowNibble) | (Avx2.ShiftLeftLogical(highBits, 4).AsByte() & bit4);
                    Vector256<byte> high = (Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & lowNibble) | (Avx2.ShiftLeftLogical(highBits, 3).AsByte() & bit4);
                    highBits = Avx2.ShiftRightLogical(highBits, 2);
                    KQuantDecode.StoreAffine32(low, d * sc0, dmin * m0, y + 64 * chunk);
                    KQuantDecode.StoreAffine32(high, d * sc1, dmin * m1, y + 64 * chunk + 32);
                }
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int count = KQuantBlocks.CheckRow(Layout, values, blocks.Length, importance);
        Span<byte> levels = stackalloc byte[KQuantBlocks.SuperBlock];
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<float> x = values.Slice(i * KQuantBlocks.SuperBlock, KQuantBlocks.SuperBlock);
            ReadOnlySpan<float> imp = importance.IsEmpty ? default : importance.Slice(i * KQuantBlocks.SuperBlock, KQuantBlocks.SuperBlock);
            Span<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            (float d, float dmin) = KQuantAffineEncoder.Encode(x, imp, 31, -0.5f, 0.1f, 15, block.Slice(ScalesOffset, 12), levels);
            KQuantBlocks.WriteHalf(block, DOffset, d);
            KQuantBlocks.WriteHalf(block, DMinOffset, dmin);
            Span<byte> high = block.Slice(HighOffset, 32);
            high.Clear();
            for (int sub = 0; sub < 8; sub++)
            {
                for (int l = 0; l < 32; l++)
                {
                    int level = levels[32 * sub + l];
                    high[l] |= (byte)((level >> 4) << sub);
                    ref byte low = ref block[LevelsOffset + 32 * (sub >> 1) + l];
                    low = (sub & 1) == 0 ? (byte)(level & 0xF) : (byte)(low | ((level & 0xF) << 4));
                }
            }
        }
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        // Constants rather than the format's layout: the check runs once per row, and the layout lookups and a
        // division by a non-constant block size cost more than a tenth of a 4096-value row's dot.
        int count = RowGuard.Dot(GgmlType.Q5_K, Q8KLayout.BlockSize, BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        return KernelDispatch.UpToAvx2(path) switch
        {
            KernelPath.Avx2 => Q5_KDot.WithAvx2(weights, activations, count),
            KernelPath.Portable => Q5_KDot.WithVector128(weights, activations, count),
            _ => Q5_KDot.Scalar(weights, activations, count),
        };
    }
}
