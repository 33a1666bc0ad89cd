using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>ggml's block_q8_1: 32 int8 values, an fp16 scale d and s = d·Σq (fp16), which folds the weight minimum of Q4_1/Q5_1 into one product.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ8_1
{
    public const int Values = 32;
    public ushort D;
    public ushort S;
    public fixed sbyte Qs[Values];
}

/// <summary>
/// Q8_1: the activation format of Q4_1 and Q5_1. <see cref="Quantize"/> matches ggml's CPU <c>quantize_row_q8_1</c>
/// (x86 SIMD: 127/amax, round half to even) bit for bit. ggml itself has no Q8_1·Q8_1 kernel and no to_float for it;
/// Fathom has both so the format is complete, x = d·q.
/// </summary>
public sealed unsafe class Q8_1Format : WeightFormat
{
    private static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];
    private readonly KernelDispatch _dispatch = new(Paths);

    public override GgmlType Type => GgmlType.Q8_1;
    public override GgmlType DotActivationType => GgmlType.Q8_1;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        fixed (byte* src = blocks)
        fixed (float* dst = values)
        {
            var b = (BlockQ8_1*)src;
            for (int i = 0; i < nb; i++)
            {
                var d = Vector128.Create(Fp16.ToSingle(b[i].D));
                Int8Simd.ScaleStore(Vector128.Load(b[i].Qs), d, dst + i * 32);
                Int8Simd.ScaleStore(Vector128.Load(b[i].Qs + 16), d, dst + i * 32 + 16);
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        RowGuard.Importance(importance, values.Length);
        Quantize(values, blocks, BestPath);
    }

    /// <summary>The encoder through a chosen path (Scalar, or Avx2 where supported), so tests can hold both to ggml.</summary>
    internal void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, KernelPath path)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        bool simd = _dispatch.Resolve(path) == KernelPath.Avx2;
        fixed (float* x = values)
        fixed (byte* dst = blocks)
        {
            var b = (BlockQ8_1*)dst;
            for (int i = 0; i < nb; i++)
            {
                float d;
                int sum;
                b[i].D = simd ? Q8_0Format.QuantizeBlockAvx2(x + i * BlockQ8_1.Values, b[i].Qs, out d, out sum)
                              : Q8_0Format.QuantizeBlock(new ReadOnlySpan<float>(x + i * BlockQ8_1.Values, BlockQ8_1.Values), ref b[i].Qs[0], out d, out sum);
                b[i].S = Fp16.FromSingle(d * sum);
            }
        }
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(this, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            var x = (BlockQ8_1*)w;
            var y = (BlockQ8_1*)a;
            return _dispatch.Resolve(path) switch
            {
                KernelPath.Avx2 => DotAvx2(x, y, nb),
                KernelPath.Portable => DotPortable(x, y, nb),
                _ => DotScalar(x, y, nb),
            };
        }
    }

    private static float DotScalar(BlockQ8_1* x, BlockQ8_1* y, int nb)
    {
        float sum = 0;
        for (int i = 0; i < nb; i++)
        {
            int sumi = 0;
            for (int j = 0; j < BlockQ8_1.Values; j++) sumi += x[i].Qs[j] * y[i].Qs[j];
            sum += sumi * (Fp16.Lookup(x[i].D) * Fp16.Lookup(y[i].D));
        }
        return sum;
    }

    private static float DotPortable(BlockQ8_1* x, BlockQ8_1* y, int nb)
    {
        Vector128<float> sum = Vector128<float>.Zero;
        for (int i = 0; i < nb; i++)
        {
            Vector128<int> acc = Int8Simd.DotPortable(Vector128.Load(x[i].Qs), Vector128.Load(y[i].Qs))
                               + Int8Simd.DotPortable(Vector128.Load(x[i].Qs + 16), Vector128.Load(y[i].Qs + 16));
            sum += Vector128.ConvertToSingle(acc) * Vector128.Create(Fp16.Lookup(x[i].D) * Fp16.Lookup(y[i].D));
        }
        return Vector128.Sum(sum);
    }

    private static float DotAvx2(BlockQ8_1* x, BlockQ8_1* y, int nb)
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
    private static Vector256<float> BlockDot(BlockQ8_1* x, BlockQ8_1* y)
    {
        return Avx.ConvertToVector256Single(Int8Simd.DotQuadsAvx2(Vector256.Load(x->Qs), Vector256.Load(y->Qs)));
    }
}
