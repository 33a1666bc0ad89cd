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
        ReadOnlySpan<BlockQ8_1> b = MemoryMarshal.Cast<byte, BlockQ8_1>(blocks);
        for (int i = 0; i < nb; i++)
        {
            float d = Fp16.ToSingle(b[i].D);
            Span<float> y = values.Slice(i * BlockQ8_1.Values, BlockQ8_1.Values);
            for (int j = 0; j < BlockQ8_1.Values; j++) y[j] = b[i].Qs[j] * d;
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        RowGuard.Importance(importance, values.Length);
        Span<BlockQ8_1> b = MemoryMarshal.Cast<byte, BlockQ8_1>(blocks);
        for (int i = 0; i < nb; i++)
        {
            b[i].D = Q8_0Format.QuantizeBlock(values.Slice(i * BlockQ8_1.Values, BlockQ8_1.Values), ref b[i].Qs[0], out float d, out int sum);
            b[i].S = Fp16.FromSingle(d * sum);
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
            sum += sumi * (Fp16.ToSingle(x[i].D) * Fp16.ToSingle(y[i].D));
        }
        return sum;
    }

    private static float DotPortable(BlockQ8_1* x, BlockQ8_1* y, int nb)
    {
        float sum = 0;
        for (int i = 0; i < nb; i++)
        {
            Vector128<int> acc = Int8Simd.DotPortable(Vector128.Load(x[i].Qs), Vector128.Load(y[i].Qs))
                               + Int8Simd.DotPortable(Vector128.Load(x[i].Qs + 16), Vector128.Load(y[i].Qs + 16));
            sum += Vector128.Sum(acc) * (Fp16.ToSingle(x[i].D) * Fp16.ToSingle(y[i].D));
        }
        return sum;
    }

    private static float DotAvx2(BlockQ8_1* x, BlockQ8_1* y, int nb)
    {
        Vector256<float> acc = Vector256<float>.Zero;
        for (int i = 0; i < nb; i++)
        {
            Vector256<int> q = Int8Simd.DotQuadsAvx2(Vector256.Load(x[i].Qs), Vector256.Load(y[i].Qs));
            var d = Vector256.Create(Fp16.ToSingle(x[i].D) * Fp16.ToSingle(y[i].D));
            acc = Fma.MultiplyAdd(d, Avx.ConvertToVector256Single(q), acc);
        }
        return Vector256.Sum(acc);
    }
}
