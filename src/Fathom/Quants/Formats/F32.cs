using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>F32: plain IEEE binary32 values, the identity format. Its dot pairs with F32 activations.</summary>
public sealed unsafe class F32Format : WeightFormat
{
    private static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];
    private static F32Format? _gemm;
    private readonly KernelDispatch _dispatch = new(Paths);

    public F32Format() : this(false) { }

    private F32Format(bool gemmOrder) => GemmOrder = gemmOrder;

    /// <summary>
    /// Whether this instance adds as llamafile's tinyBLAS does (<see cref="DotOrder.LlamafileGemm"/>) rather than in
    /// the type's own order (four accumulators, the faster one for rows that stay in cache).
    /// </summary>
    public bool GemmOrder { get; }

    /// <summary>
    /// <see cref="DotOrder.LlamafileGemm"/> gives the instance that adds as tinyBLAS does; any other order gives the
    /// instance in <see cref="TypeTraits"/>, which keeps its own order (ggml's vec_dot_f32 order is not reproduced).
    /// </summary>
    public override WeightFormat WithDotOrder(DotOrder order) =>
        order == DotOrder.LlamafileGemm ? (GemmOrder ? this : _gemm ??= new F32Format(true)) : TypeTraits.For(GgmlType.F32);

    public override GgmlType Type => GgmlType.F32;
    public override GgmlType DotActivationType => GgmlType.F32;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        RowGuard.Blocks(Layout, values.Length, blocks.Length);
        MemoryMarshal.Cast<byte, float>(blocks)[..values.Length].CopyTo(values);
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        RowGuard.Blocks(Layout, values.Length, blocks.Length);
        RowGuard.Importance(importance, values.Length);
        values.CopyTo(MemoryMarshal.Cast<byte, float>(blocks));
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        RowGuard.Dot(this, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            KernelPath resolved = _dispatch.Resolve(path);
            // tinyBLAS takes only rows of whole 8-value steps; the others keep the type's own order.
            if (GemmOrder && resolved != KernelPath.Scalar && n % 8 == 0)
                return resolved == KernelPath.Avx2 ? GemmAvx2((float*)w, (float*)a, n) : GemmPortable((float*)w, (float*)a, n);
            return resolved switch
            {
                KernelPath.Avx2 => DotAvx2((float*)w, (float*)a, n),
                KernelPath.Portable => DotPortable((float*)w, (float*)a, n),
                _ => DotScalar((float*)w, (float*)a, n),
            };
        }
    }

    /// <summary>Accumulates in double, as ggml's scalar vec_dot_f32 does: the reference the vector paths are held to.</summary>
    private static float DotScalar(float* x, float* y, int n)
    {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += (double)x[i] * y[i];
        return (float)sum;
    }

    /// <summary>tinyBLAS: one accumulator, a fused multiply-add per 8 values (<paramref name="n"/> a multiple of 8).</summary>
    private static float GemmAvx2(float* x, float* y, int n)
    {
        Vector256<float> acc = Vector256<float>.Zero;
        for (int i = 0; i < n; i += 8) acc = Fma.MultiplyAdd(Vector256.Load(x + i), Vector256.Load(y + i), acc);
        return HalfSums.Halves(acc);
    }

    private static float GemmPortable(float* x, float* y, int n)
    {
        Vector128<float> low = Vector128<float>.Zero, high = low;
        for (int i = 0; i < n; i += 8)
        {
            low = Vector128.FusedMultiplyAdd(Vector128.Load(x + i), Vector128.Load(y + i), low);
            high = Vector128.FusedMultiplyAdd(Vector128.Load(x + i + 4), Vector128.Load(y + i + 4), high);
        }
        return HalfSums.Halves(low, high);
    }

    private static float DotPortable(float* x, float* y, int n)
    {
        Vector128<float> a0 = Vector128<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            a0 = Vector128.FusedMultiplyAdd(Vector128.Load(x + i), Vector128.Load(y + i), a0);
            a1 = Vector128.FusedMultiplyAdd(Vector128.Load(x + i + 4), Vector128.Load(y + i + 4), a1);
            a2 = Vector128.FusedMultiplyAdd(Vector128.Load(x + i + 8), Vector128.Load(y + i + 8), a2);
            a3 = Vector128.FusedMultiplyAdd(Vector128.Load(x + i + 12), Vector128.Load(y + i + 12), a3);
        }
        for (; i + 4 <= n; i += 4) a0 = Vector128.FusedMultiplyAdd(Vector128.Load(x + i), Vector128.Load(y + i), a0);
        float sum = Vector128.Sum((a0 + a1) + (a2 + a3));
        for (; i < n; i++) sum += x[i] * y[i];
        return sum;
    }

    internal static float DotAvx2(float* x, float* y, int n)
    {
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            a0 = Fma.MultiplyAdd(Vector256.Load(x + i), Vector256.Load(y + i), a0);
            a1 = Fma.MultiplyAdd(Vector256.Load(x + i + 8), Vector256.Load(y + i + 8), a1);
            a2 = Fma.MultiplyAdd(Vector256.Load(x + i + 16), Vector256.Load(y + i + 16), a2);
            a3 = Fma.MultiplyAdd(Vector256.Load(x + i + 24), Vector256.Load(y + i + 24), a3);
        }
        for (; i + 8 <= n; i += 8) a0 = Fma.MultiplyAdd(Vector256.Load(x + i), Vector256.Load(y + i), a0);
        float sum = Vector256.Sum((a0 + a1) + (a2 + a3));
        for (; i < n; i++) sum += x[i] * y[i];
        return sum;
    }
}
