using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>ggml's block_q5_0: fp16 scale, 32 fifth bits (bit j belongs to value j), 16 bytes of low nibbles (values 0..15 low, 16..31 high).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ5_0
{
    public const int Values = 32;
    public ushort D;
    public uint Qh;
    public fixed byte Qs[Values / 2];
}

/// <summary>
/// Q5_0: symmetric 5-bit blocks of 32, x = d·(q − 16), the value of largest magnitude mapped to −16. With importance,
/// ggml's weighted scale search (make_qx_quants).
/// </summary>
public sealed unsafe class Q5_0Format : WeightFormat
{
    public override GgmlType Type => GgmlType.Q5_0;
    public override GgmlType DotActivationType => GgmlType.Q8_0;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Block32Kernels<Q5_0Kernels>.Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => Block32Kernels<Q5_0Kernels>.Dequantize(blocks, values);

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        RowGuard.Importance(importance, values.Length);
        Span<BlockQ5_0> b = MemoryMarshal.Cast<byte, BlockQ5_0>(blocks);
        Span<byte> levels = stackalloc byte[32];
        if (importance.IsEmpty)
        {
            for (int i = 0; i < nb; i++)
            {
                b[i].D = RoundBlock(values.Slice(i * 32, 32), levels);
                Pack(levels, ref b[i]);
            }
            return;
        }
        float sigma2 = QuantMath.MeanSquare(values);
        Span<float> weight = stackalloc float[32];
        for (int i = 0; i < nb; i++)
        {
            ReadOnlySpan<float> x = values.Slice(i * 32, 32);
            ReadOnlySpan<float> qw = importance.Slice(i * 32, 32);
            for (int j = 0; j < 32; j++) weight[j] = qw[j] * MathF.Sqrt(sigma2 + x[j] * x[j]);
            b[i].D = Fp16.FromSingle(QuantMath.MakeQxQuants(16, x, levels, 1, weight));
            Pack(levels, ref b[i]);
        }
    }

    /// <summary>ggml's quantize_row_q5_0_ref for one block: levels 0..31 and the fp16 scale.</summary>
    private static ushort RoundBlock(ReadOnlySpan<float> x, Span<byte> levels)
    {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
        {
            if (amax < MathF.Abs(x[j])) { amax = MathF.Abs(x[j]); max = x[j]; }
        }
        float d = max / -16;
        float id = d != 0 ? 1f / d : 0f;
        for (int j = 0; j < 32; j++) levels[j] = (byte)Math.Min(31, (int)(x[j] * id + 16.5f));
        return Fp16.FromSingle(d);
    }

    private static void Pack(ReadOnlySpan<byte> levels, ref BlockQ5_0 block)
    {
        uint qh = 0;
        for (int j = 0; j < 16; j++)
        {
            block.Qs[j] = (byte)((levels[j] & 0x0F) | ((levels[j + 16] & 0x0F) << 4));
            qh |= (uint)(levels[j] >> 4) << j;
            qh |= (uint)(levels[j + 16] >> 4) << (j + 16);
        }
        block.Qh = qh;
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        Block32Kernels<Q5_0Kernels>.Dot(weights, activations, n, path);
}

/// <summary>
/// Q5_0 × Q8_0 blocks for <see cref="Block32Kernels{TBlock}"/>: levels (nibble | fifth bit · 16) − 16, which is
/// nibble | 0xF0 (as int8) when the fifth bit is clear and the nibble itself when it is set.
/// </summary>
internal readonly unsafe struct Q5_0Kernels : IBlock32Kernels
{
    public static GgmlType Type => GgmlType.Q5_0;
    public static int BlockBytes => 22;
    public static bool PairsWithQ8_1 => false;
    public static bool HasMinimum => false;

    public static int Products(byte* block, sbyte* a)
    {
        var b = (BlockQ5_0*)block;
        uint qh = b->Qh;
        int sum = 0;
        for (int j = 0; j < 16; j++)
        {
            int q0 = ((b->Qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4) - 16;
            int q1 = ((b->Qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) - 16;
            sum += q0 * a[j] + q1 * a[j + 16];
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector128<sbyte> First, Vector128<sbyte> Second) Levels(byte* block)
    {
        var b = (BlockQ5_0*)block;
        var high = Vector128.Create((byte)0xF0);
        uint qh = b->Qh;
        Vector128<byte> q = Vector128.Load(b->Qs);
        return (((q & Vector128.Create((byte)0x0F)) | Vector128.AndNot(high, Int8Simd.BitsToBytes(qh & 0xFFFF))).AsSByte(),
                (Vector128.ShiftRightLogical(q, 4) | Vector128.AndNot(high, Int8Simd.BitsToBytes(qh >> 16))).AsSByte());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> ProductsAvx2(byte* block, sbyte* a)
    {
        var b = (BlockQ5_0*)block;
        Vector128<byte> q = Vector128.Load(b->Qs);
        Vector256<byte> nibbles = Vector256.Create(q, Vector128.ShiftRightLogical(q.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
        Vector256<byte> fifth = Avx2.AndNot(Int8Simd.BitsToBytesAvx2(&b->Qh), Vector256.Create((byte)0xF0));
        return Int8Simd.DotQuadsAvx2((nibbles | fifth).AsSByte(), Vector256.Load(a));
    }
}
