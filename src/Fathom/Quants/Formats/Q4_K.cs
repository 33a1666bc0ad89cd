using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// Q4_K: 256 values in 144 bytes (4.5 bits). <c>fp16 d; fp16 dmin; u8 scales[12]; u8 qs[128]</c>. Eight 32-value
/// sub-blocks decode as d·sc·q − dmin·m with 6-bit (sc, m) pairs (see <see cref="KQuantScales"/>); each 32 bytes
/// of qs hold two sub-blocks, the first in the low nibbles and the next in the high nibbles.
/// </summary>
public sealed class Q4_KFormat : WeightFormat
{
    internal const int BlockBytes = 144;
    internal const int DOffset = 0;
    internal const int DMinOffset = 2;
    internal const int ScalesOffset = 4;
    internal const int LevelsOffset = 16;

    public override GgmlType Type => GgmlType.Q4_K;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => KQuantBlocks.DotPathsWithAvx512;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int count = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        if (KQuantDecode.IsAccelerated) DequantizeAvx2(blocks, values, count);
        else DequantizeScalar(blocks, values, count);
    }

    /// <summary>The reference decoder, ggml's dequantize_row_q4_k value for value.</summary>
    internal static void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values, int count)
    {
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> block = blocks.Slice(i * BlockBytes, BlockBytes);
            Span<float> y = values.Slice(i * KQuantBlocks.SuperBlock, KQuantBlocks.SuperBlock);
            float d = KQuantBlocks.ReadHalf(block, DOffset);
            float dmin = KQuantBlocks.ReadHalf(block, DMinOffset);
            ReadOnlySpan<byte> scales = block.Slice(ScalesOffset, 12);
            for (int chunk = 0; chunk < 4; chunk++)
            {
                ReadOnlySpan<byte> q = block.Slice(LevelsOffset + 32 * chunk, 32);
                KQuantScales.ReadScaleMin(scales, 2 * chunk, out int sc0, out int m0);
                KQuantScales.ReadScaleMin(scales, 2 * chunk + 1, out int sc1, out int m1);
                float d0 = d * sc0, o0 = dmin * m0, d1 = d * sc1, o1 = dmin * m1;
                Span<float> out0 = y.Slice(64 * chunk, 32), out1 = y.Slice(64 * chunk + 32, 32);
                for (int l = 0; l < 32; l++)
                {
                    out0[l] = d0 * (q[l] & 0xF) - o0;
                    out1[l] = d1 * (q[l] >> 4) - o1;
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
            Vector256<byte> lowNibble = Vector256.Create((byte)0x0F);
            for (int i = 0; i < count; i++)
            {
                byte* block = bp + (long)i * BlockBytes;
                float* y = yp + (long)i * KQuantBlocks.SuperBlock;
                float d = KQuantBlocks.ReadHalf(block + DOffset), dmin = KQuantBlocks.ReadHalf(block + DMinOffset);
                ReadOnlySpan<byte> scales = new(block + ScalesOffset, 12);
                for (int chunk = 0; chunk < 4; chunk++)
                {
                    KQuantScales.ReadScaleMin(scales, 2 * chunk, out int sc0, out int m0);
                    KQuantScales.ReadScaleMin(scales, 2 * chunk + 1, out int sc1, out int m1);
                    Vector256<byte> bits = Avx.LoadVector256(block + LevelsOffset + 32 * chunk);
                    KQuantDecode.StoreAffine32(bits & lowNibble, d * sc0, dmin * m0, y + 64 * chunk);
                    KQuantDecode.StoreAffine32(Avx2.ShiftRightLogical(bits.AsUInt16(), 4).AsByte() & lowNibble, d * sc1, dmin * m1, y + 64 * chunk + 32);
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
            (float d, float dmin) = KQuantAffineEncoder.Encode(x, imp, 15, -1f, 0.1f, 20, block.Slice(ScalesOffset, 12), levels);
            KQuantBlocks.WriteHalf(block, DOffset, d);
            KQuantBlocks.WriteHalf(block, DMinOffset, dmin);
            Span<byte> q = block.Slice(LevelsOffset, 128);
            for (int chunk = 0; chunk < 4; chunk++)
                for (int l = 0; l < 32; l++)
                    q[32 * chunk + l] = (byte)(levels[64 * chunk + l] | (levels[64 * chunk + 32 + l] << 4));
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
        int count = RowGuard.Dot(GgmlType.Q4_K, Q8KLayout.BlockSize, BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        return path switch
        {
            KernelPath.Avx512 => Q4_KDot.WithAvx512(weights, activations, count),
            KernelPath.Avx2 or KernelPath.AvxVnni => Q4_KDot.WithAvx2(weights, activations, count),
            KernelPath.Portable => Q4_KDot.WithVector128(weights, activations, count),
            _ => Q4_KDot.Scalar(weights, activations, count),
        };
    }
}
