using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>ggml's block_q4_0: fp16 scale, then 16 bytes whose low nibbles are values 0..15 and high nibbles values 16..31.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ4_0
{
    public const int Values = 32;
    public ushort D;
    public fixed byte Qs[Values / 2];
}

/// <summary>
/// Q4_0: symmetric 4-bit blocks of 32, x = d·(q − 8). The scale maps the value of largest magnitude to −8 so the
/// asymmetric range −8..7 is used in full. With importance, ggml's weighted scale search (make_qx_quants).
/// </summary>
public sealed unsafe class Q4_0Format : WeightFormat
{
    public override GgmlType Type => GgmlType.Q4_0;
    public override GgmlType DotActivationType => GgmlType.Q8_0;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Block32Kernels<Q4_0Kernels>.Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => Block32Kernels<Q4_0Kernels>.Dequantize(blocks, values);

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        RowGuard.Importance(importance, values.Length);
        Span<BlockQ4_0> b = MemoryMarshal.Cast<byte, BlockQ4_0>(blocks);
        if (importance.IsEmpty)
        {
            for (int i = 0; i < nb; i++) QuantizeBlock(values.Slice(i * 32, 32), ref b[i]);
            return;
        }
        float sigma2 = QuantMath.MeanSquare(values);
        Span<float> weight = stackalloc float[32];
        Span<byte> levels = stackalloc byte[32];
        for (int i = 0; i < nb; i++)
        {
            ReadOnlySpan<float> x = values.Slice(i * 32, 32);
            ReadOnlySpan<float> qw = importance.Slice(i * 32, 32);
            for (int j = 0; j < 32; j++) weight[j] = qw[j] * MathF.Sqrt(sigma2 + x[j] * x[j]);
            float d = QuantMath.MakeQxQuants(8, x, levels, 1, weight);
            b[i].D = Fp16.FromSingle(d);
            for (int j = 0; j < 16; j++) b[i].Qs[j] = (byte)(levels[j] | (levels[j + 16] << 4));
        }
    }

    /// <summary>ggml's quantize_row_q4_0_ref for one block.</summary>
    private static void QuantizeBlock(ReadOnlySpan<float> x, ref BlockQ4_0 block)
    {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
        {
            if (amax < MathF.Abs(x[j])) { amax = MathF.Abs(x[j]); max = x[j]; }
        }
        float d = max / -8;
        float id = d != 0 ? 1f / d : 0f;
        block.D = Fp16.FromSingle(d);
        for (int j = 0; j < 16; j++)
        {
            // Truncation after +8.5 rounds to nearest; the largest value lands on 16 and is clamped to 15.
            int q0 = Math.Min(15, (int)(x[j] * id + 8.5f));
            int q1 = Math.Min(15, (int)(x[j + 16] * id + 8.5f));
            block.Qs[j] = (byte)(q0 | (q1 << 4));
        }
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        Block32Kernels<Q4_0Kernels>.Dot(weights, activations, n, path);
}

/// <summary>Q4_0 × Q8_0 blocks for <see cref="Block32Kernels{TBlock}"/>: levels q − 8, low nibbles first.</summary>
internal readonly unsafe struct Q4_0Kernels : IBlock32Kernels
{
    public static GgmlType Type => GgmlType.Q4_0;
    public static int BlockBytes => 18;
    public static bool PairsWithQ8_1 => false;
    public static bool HasMinimum => false;

    public static int Products(byte* block, sbyte* a)
    {
        byte* qs = ((BlockQ4_0*)block)->Qs;
        int sum = 0;
        for (int j = 0; j < 16; j++) sum += ((qs[j] & 0x0F) - 8) * a[j] + ((qs[j] >> 4) - 8) * a[j + 16];
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector128<sbyte> First, Vector128<sbyte> Second) Levels(byte* block)
    {
        var eight = Vector128.Create((sbyte)8);
        Vector128<byte> q = Vector128.Load(((BlockQ4_0*)block)->Qs);
        return ((q & Vector128.Create((byte)0x0F)).AsSByte() - eight, Vector128.ShiftRightLogical(q, 4).AsSByte() - eight);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> ProductsAvx2(byte* block, sbyte* a)
    {
        Vector128<byte> q = Vector128.Load(((BlockQ4_0*)block)->Qs);
        // Low nibbles fill the lower 16 lanes (values 0..15), high nibbles the upper (16..31).
        Vector256<byte> both = Vector256.Create(q, Vector128.ShiftRightLogical(q.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
        return Int8Simd.DotQuadsAvx2(both.AsSByte() - Vector256.Create((sbyte)8), Vector256.Load(a));
    }
}
