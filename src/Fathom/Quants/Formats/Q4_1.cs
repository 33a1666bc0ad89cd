using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>ggml's block_q4_1: fp16 scale d and minimum m, then 32 nibbles (low nibbles values 0..15, high 16..31).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ4_1
{
    public const int Values = 32;
    public ushort D;
    public ushort M;
    public fixed byte Qs[Values / 2];
}

/// <summary>
/// Q4_1: asymmetric 4-bit blocks of 32, x = d·q + m. Without importance the block's range is split in 15 steps;
/// with importance, ggml's weighted least-squares search over scale and minimum (make_qkx3_quants).
/// </summary>
public sealed unsafe class Q4_1Format : WeightFormat
{
    public override GgmlType Type => GgmlType.Q4_1;
    public override GgmlType DotActivationType => GgmlType.Q8_1;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Block32Kernels<Q4_1Kernels>.Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => Block32Kernels<Q4_1Kernels>.Dequantize(blocks, values);

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        RowGuard.Importance(importance, values.Length);
        Span<BlockQ4_1> b = MemoryMarshal.Cast<byte, BlockQ4_1>(blocks);
        if (importance.IsEmpty)
        {
            for (int i = 0; i < nb; i++) QuantizeBlock(values.Slice(i * 32, 32), ref b[i]);
            return;
        }
        float sigma2 = QuantMath.MeanSquare(values);
        Span<float> weight = stackalloc float[32];
        Span<byte> levels = stackalloc byte[32];
        Span<byte> scratch = stackalloc byte[32];
        for (int i = 0; i < nb; i++)
        {
            ReadOnlySpan<float> x = values.Slice(i * 32, 32);
            ReadOnlySpan<float> qw = importance.Slice(i * 32, 32);
            for (int j = 0; j < 32; j++) weight[j] = qw[j] * MathF.Sqrt(sigma2 + x[j] * x[j]);
            float d = KQuantSearch.Affine(x, 15, weight, levels, scratch, out float negatedMin, -0.9f, 0.05f, 36, absoluteError: false);
            b[i].D = Fp16.FromSingle(d);
            b[i].M = Fp16.FromSingle(-negatedMin);
            for (int j = 0; j < 16; j++) b[i].Qs[j] = (byte)(levels[j] | (levels[j + 16] << 4));
        }
    }

    /// <summary>ggml's quantize_row_q4_1_ref for one block.</summary>
    private static void QuantizeBlock(ReadOnlySpan<float> x, ref BlockQ4_1 block)
    {
        float min = float.MaxValue, max = -float.MaxValue;
        for (int j = 0; j < 32; j++)
        {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        float d = (max - min) / 15;
        float id = d != 0 ? 1f / d : 0f;
        block.D = Fp16.FromSingle(d);
        block.M = Fp16.FromSingle(min);
        for (int j = 0; j < 16; j++)
        {
            int q0 = Math.Min(15, (int)((x[j] - min) * id + 0.5f));
            int q1 = Math.Min(15, (int)((x[j + 16] - min) * id + 0.5f));
            block.Qs[j] = (byte)(q0 | (q1 << 4));
        }
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        Block32Kernels<Q4_1Kernels>.Dot(weights, activations, n, path);
}

/// <summary>
/// Q4_1 × Q8_1 blocks for <see cref="Block32Kernels{TBlock}"/>: Σ (d·q + m)·(dy·qy) = d·dy·Σ q·qy + m·s, the
/// activation block carrying s = dy·Σ qy; the levels q are unsigned nibbles.
/// </summary>
internal readonly unsafe struct Q4_1Kernels : IBlock32Kernels
{
    public static GgmlType Type => GgmlType.Q4_1;
    public static int BlockBytes => 20;
    public static bool PairsWithQ8_1 => true;
    public static bool HasMinimum => true;

    public static int Products(byte* block, sbyte* a)
    {
        byte* qs = ((BlockQ4_1*)block)->Qs;
        int sum = 0;
        for (int j = 0; j < 16; j++) sum += (qs[j] & 0x0F) * a[j] + (qs[j] >> 4) * a[j + 16];
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector128<sbyte> First, Vector128<sbyte> Second) Levels(byte* block)
    {
        Vector128<byte> q = Vector128.Load(((BlockQ4_1*)block)->Qs);
        return ((q & Vector128.Create((byte)0x0F)).AsSByte(), Vector128.ShiftRightLogical(q, 4).AsSByte());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> ProductsAvx2(byte* block, sbyte* a)
    {
        Vector128<byte> q = Vector128.Load(((BlockQ4_1*)block)->Qs);
        Vector256<byte> both = Vector256.Create(q, Vector128.ShiftRightLogical(q.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
        return Int8Simd.DotQuadsUnsignedAvx2(both, Vector256.Load(a));
    }
}
