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
    private static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];
    private readonly KernelDispatch _dispatch = new(Paths);

    public override GgmlType Type => GgmlType.Q5_0;
    public override GgmlType DotActivationType => GgmlType.Q8_0;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        var low = Vector128.Create((byte)0x0F);
        var high = Vector128.Create((byte)0xF0);
        fixed (byte* src = blocks)
        fixed (float* dst = values)
        {
            var b = (BlockQ5_0*)src;
            for (int i = 0; i < nb; i++)
            {
                var d = Vector128.Create(Fp16.ToSingle(b[i].D));
                uint qh = b[i].Qh;
                Vector128<byte> q = Vector128.Load(b[i].Qs);
                // q − 16 = nibble | 0xF0 (as int8) when the fifth bit is clear, the nibble when it is set.
                Int8Simd.ScaleStore(((q & low) | Vector128.AndNot(high, Int8Simd.BitsToBytes(qh & 0xFFFF))).AsSByte(), d, dst + i * 32);
                Int8Simd.ScaleStore((Vector128.ShiftRightLogical(q, 4) | Vector128.AndNot(high, Int8Simd.BitsToBytes(qh >> 16))).AsSByte(), d, dst + i * 32 + 16);
            }
        }
    }

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

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(this, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            var x = (BlockQ5_0*)w;
            var y = (BlockQ8_0*)a;
            return _dispatch.Resolve(path) switch
            {
                KernelPath.Avx2 => DotAvx2(x, y, nb),
                KernelPath.Portable => DotPortable(x, y, nb),
                _ => DotScalar(x, y, nb),
            };
        }
    }

    private static float DotScalar(BlockQ5_0* x, BlockQ8_0* y, int nb)
    {
        float sum = 0;
        for (int i = 0; i < nb; i++)
        {
            uint qh = x[i].Qh;
            int sumi = 0;
            for (int j = 0; j < 16; j++)
            {
                int q = x[i].Qs[j];
                int q0 = ((q & 0x0F) | (int)((qh >> j) & 1) << 4) - 16;
                int q1 = ((q >> 4) | (int)((qh >> (j + 16)) & 1) << 4) - 16;
                sumi += q0 * y[i].Qs[j] + q1 * y[i].Qs[j + 16];
            }
            sum += sumi * (Fp16.Lookup(x[i].D) * Fp16.Lookup(y[i].D));
        }
        return sum;
    }

    // q − 16 = nibble | 0xF0 (as int8) when the fifth bit is clear, and the nibble itself when it is set.
    private static float DotPortable(BlockQ5_0* x, BlockQ8_0* y, int nb)
    {
        var low = Vector128.Create((byte)0x0F);
        var high = Vector128.Create((byte)0xF0);
        Vector128<float> sum = Vector128<float>.Zero;
        for (int i = 0; i < nb; i++)
        {
            uint qh = x[i].Qh;
            Vector128<byte> q = Vector128.Load(x[i].Qs);
            Vector128<sbyte> lo = ((q & low) | Vector128.AndNot(high, Int8Simd.BitsToBytes(qh & 0xFFFF))).AsSByte();
            Vector128<sbyte> hi = (Vector128.ShiftRightLogical(q, 4) | Vector128.AndNot(high, Int8Simd.BitsToBytes(qh >> 16))).AsSByte();
            Vector128<int> acc = Int8Simd.DotPortable(lo, Vector128.Load(y[i].Qs)) + Int8Simd.DotPortable(hi, Vector128.Load(y[i].Qs + 16));
            sum += Vector128.ConvertToSingle(acc) * Vector128.Create(Fp16.Lookup(x[i].D) * Fp16.Lookup(y[i].D));
        }
        return Vector128.Sum(sum);
    }

    private static float DotAvx2(BlockQ5_0* x, BlockQ8_0* y, int nb)
    {
        // Two blocks per step into two accumulators, so consecutive FMAs do not wait on each other.
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0;
        int i = 0;
        for (; i + 2 <= nb; i += 2)
        {
            acc0 = Fma.MultiplyAdd(Vector256.Create(Fp16.Lookup(x[i].D) * Fp16.Lookup(y[i].D)), BlockDot(x + i, y + i), acc0);
            acc1 = Fma.MultiplyAdd(Vector256.Create(Fp16.Lookup(x[i + 1].D) * Fp16.Lookup(y[i + 1].D)), BlockDot(x + i + 1, y + i + 1), acc1);
        }
        if (i < nb) acc0 = Fma.MultiplyAdd(Vector256.Create(Fp16.Lookup(x[i].D) * Fp16.Lookup(y[i].D)), BlockDot(x + i, y + i), acc0);
        return Vector256.Sum(acc0 + acc1);
    }

    /// <summary>The eight int32 partial sums of one block's q·qy, as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockDot(BlockQ5_0* x, BlockQ8_0* y)
    {
        Vector128<byte> q = Vector128.Load(x->Qs);
        Vector256<byte> nibbles = Vector256.Create(q, Vector128.ShiftRightLogical(q.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
        // q − 16 = nibble | 0xF0 (as int8) when the fifth bit is clear, the nibble when it is set.
        Vector256<byte> fifth = Avx2.AndNot(Int8Simd.BitsToBytesAvx2(x->Qh), Vector256.Create((byte)0xF0));
        return Avx.ConvertToVector256Single(Int8Simd.DotQuadsAvx2((nibbles | fifth).AsSByte(), Vector256.Load(y->Qs)));
    }
}
