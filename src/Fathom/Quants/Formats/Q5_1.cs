using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>ggml's block_q5_1: fp16 scale d and minimum m, 32 fifth bits, 16 bytes of low nibbles.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ5_1
{
    public const int Values = 32;
    public ushort D;
    public ushort M;
    public uint Qh;
    public fixed byte Qs[Values / 2];
}

/// <summary>
/// Q5_1: asymmetric 5-bit blocks of 32, x = d·q + m. Without importance the range is split in 31 steps; with
/// importance, ggml's weighted least-squares search over scale and minimum (make_qkx3_quants).
/// </summary>
public sealed unsafe class Q5_1Format : WeightFormat
{
    public override GgmlType Type => GgmlType.Q5_1;
    public override GgmlType DotActivationType => GgmlType.Q8_1;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Block32Kernels<Q5_1Kernels>.Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => Block32Kernels<Q5_1Kernels>.Dequantize(blocks, values);

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        RowGuard.Importance(importance, values.Length);
        Span<BlockQ5_1> b = MemoryMarshal.Cast<byte, BlockQ5_1>(blocks);
        Span<byte> levels = stackalloc byte[32];
        if (importance.IsEmpty)
        {
            for (int i = 0; i < nb; i++)
            {
                RoundBlock(values.Slice(i * 32, 32), levels, out b[i].D, out b[i].M);
                Pack(levels, ref b[i]);
            }
            return;
        }
        float sigma2 = QuantMath.MeanSquare(values);
        Span<float> weight = stackalloc float[32];
        Span<byte> scratch = stackalloc byte[32];
        for (int i = 0; i < nb; i++)
        {
            ReadOnlySpan<float> x = values.Slice(i * 32, 32);
            ReadOnlySpan<float> qw = importance.Slice(i * 32, 32);
            for (int j = 0; j < 32; j++) weight[j] = qw[j] * MathF.Sqrt(sigma2 + x[j] * x[j]);
            float d = KQuantSearch.Affine(x, 31, weight, levels, scratch, out float negatedMin, -0.9f, 0.05f, 36, absoluteError: false);
            b[i].D = Fp16.FromSingle(d);
            b[i].M = Fp16.FromSingle(-negatedMin);
            Pack(levels, ref b[i]);
        }
    }

    /// <summary>ggml's quantize_row_q5_1_ref for one block.</summary>
    private static void RoundBlock(ReadOnlySpan<float> x, Span<byte> levels, out ushort dBits, out ushort mBits)
    {
        float min = float.MaxValue, max = -float.MaxValue;
        for (int j = 0; j < 32; j++)
        {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        float d = (max - min) / 31;
        float id = d != 0 ? 1f / d : 0f;
        for (int j = 0; j < 32; j++) levels[j] = (byte)Math.Min(31, (int)((x[j] - min) * id + 0.5f));
        dBits = Fp16.FromSingle(d);
        mBits = Fp16.FromSingle(min);
    }

    private static void Pack(ReadOnlySpan<byte> levels, ref BlockQ5_1 block)
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
        Block32Kernels<Q5_1Kernels>.Dot(weights, activations, n, path);
}

/// <summary>Q5_1 × Q8_1 blocks for <see cref="Block32Kernels{TBlock}"/>: unsigned levels nibble | fifth bit · 16, plus m·s per block.</summary>
internal readonly unsafe struct Q5_1Kernels : IBlock32Kernels
{
    public static GgmlType Type => GgmlType.Q5_1;
    public static int BlockBytes => 24;
    public static bool PairsWithQ8_1 => true;
    public static bool HasMinimum => true;

    public static int Products(byte* block, sbyte* a)
    {
        var b = (BlockQ5_1*)block;
        uint qh = b->Qh;
        int sum = 0;
        for (int j = 0; j < 16; j++)
        {
            int q0 = (b->Qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
            int q1 = (b->Qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            sum += q0 * a[j] + q1 * a[j + 16];
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector128<sbyte> First, Vector128<sbyte> Second) Levels(byte* block)
    {
        var b = (BlockQ5_1*)block;
        var bit4 = Vector128.Create((byte)0x10);
        uint qh = b->Qh;
        Vector128<byte> q = Vector128.Load(b->Qs);
        return (((q & Vector128.Create((byte)0x0F)) | (Int8Simd.BitsToBytes(qh & 0xFFFF) & bit4)).AsSByte(),
                (Vector128.ShiftRightLogical(q, 4) | (Int8Simd.BitsToBytes(qh >> 16) & bit4)).AsSByte());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> ProductsAvx2(byte* block, sbyte* a)
    {
        var b = (BlockQ5_1*)block;
        Vector128<byte> q = Vector128.Load(b->Qs);
        Vector256<byte> nibbles = Vector256.Create(q, Vector128.ShiftRightLogical(q.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
        Vector256<byte> fifth = Int8Simd.BitsToBytesAvx2(&b->Qh) & Vector256.Create((byte)0x10);
        return Int8Simd.DotQuadsUnsignedAvx2(nibbles | fifth, Vector256.Load(a));
    }
}
