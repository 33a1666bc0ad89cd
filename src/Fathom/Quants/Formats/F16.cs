using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// F16: IEEE binary16 values; encoding rounds to nearest even like ggml's. Its dot pairs with F16 activations and adds
/// its products in one of ggml's two orders (<see cref="DotOrder"/>): the instance in <see cref="TypeTraits"/>
/// uses llamafile's, <see cref="WithDotOrder"/> gives the other.
/// </summary>
public sealed unsafe class F16Format : WeightFormat
{
    private static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];
    private static F16Format? _vecDot;
    private readonly KernelDispatch _dispatch = new(Paths);

    public F16Format() : this(DotOrder.LlamafileGemm) { }

    private F16Format(DotOrder order) => Order = order;

    /// <summary>The order this instance's vector paths add products in.</summary>
    public DotOrder Order { get; }

    public override GgmlType Type => GgmlType.F16;
    public override GgmlType DotActivationType => GgmlType.F16;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Paths;

    public override WeightFormat WithDotOrder(DotOrder order) => order == Order ? this
        : order == DotOrder.LlamafileGemm ? TypeTraits.For(GgmlType.F16)
        : _vecDot ??= new F16Format(DotOrder.GgmlVecDot);

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        RowGuard.Blocks(Layout, values.Length, blocks.Length);
        TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(blocks)[..values.Length], values);
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        RowGuard.Blocks(Layout, values.Length, blocks.Length);
        RowGuard.Importance(importance, values.Length);
        TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(blocks)[..values.Length]);
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        RowGuard.Dot(this, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            KernelPath resolved = _dispatch.Resolve(path);
            if (resolved == KernelPath.Scalar) return DotScalar((ushort*)w, (ushort*)a, n);
            bool avx2 = resolved == KernelPath.Avx2;
            // tinyBLAS takes only rows of whole 8-value steps; ggml multiplies the others with vec_dot.
            return Order == DotOrder.LlamafileGemm && n % 8 == 0
                ? (avx2 ? GemmAvx2((ushort*)w, (ushort*)a, n) : GemmPortable((ushort*)w, (ushort*)a, n))
                : (avx2 ? VecDotAvx2((ushort*)w, (ushort*)a, n) : VecDotPortable((ushort*)w, (ushort*)a, n));
        }
    }

    /// <summary>Accumulates in double, as ggml's scalar vec_dot_f16 does: the reference the vector paths are held to.</summary>
    private static float DotScalar(ushort* x, ushort* y, int n)
    {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += (double)Fp16.ToSingle(x[i]) * Fp16.ToSingle(y[i]);
        return (float)sum;
    }

    /// <summary>
    /// Four rows at a time in tinyBLAS's order (each row's own accumulator, so each value is <see cref="GemmAvx2"/>'s):
    /// four independent chains keep the multiply-add unit busy where one chain would wait on its latency.
    /// </summary>
    internal override void DotRows(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes, int n, float* output)
    {
        if (Order != DotOrder.LlamafileGemm || n % 8 != 0 || _dispatch.Resolve(BestPath) != KernelPath.Avx2)
        {
            base.DotRows(weights, weightRowBytes, rows, activations, activationRowBytes, n, output);
            return;
        }
        var a = (ushort*)activations;
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            var w0 = (ushort*)(weights + r * weightRowBytes);
            ushort* w1 = (ushort*)((byte*)w0 + weightRowBytes), w2 = (ushort*)((byte*)w1 + weightRowBytes), w3 = (ushort*)((byte*)w2 + weightRowBytes);
            Vector256<float> c0 = Vector256<float>.Zero, c1 = c0, c2 = c0, c3 = c0;
            for (int i = 0; i < n; i += 8)
            {
                Vector256<float> x = Widen(a + i);
                c0 = Fma.MultiplyAdd(Widen(w0 + i), x, c0);
                c1 = Fma.MultiplyAdd(Widen(w1 + i), x, c1);
                c2 = Fma.MultiplyAdd(Widen(w2 + i), x, c2);
                c3 = Fma.MultiplyAdd(Widen(w3 + i), x, c3);
            }
            output[r] = HalfSums.Halves(c0);
            output[r + 1] = HalfSums.Halves(c1);
            output[r + 2] = HalfSums.Halves(c2);
            output[r + 3] = HalfSums.Halves(c3);
        }
        for (; r < rows; r++) output[r] = GemmAvx2((ushort*)(weights + r * weightRowBytes), a, n);
    }

    /// <summary>tinyBLAS: one accumulator, a fused multiply-add per 8 values (<paramref name="n"/> a multiple of 8).</summary>
    private static float GemmAvx2(ushort* x, ushort* y, int n)
    {
        Vector256<float> acc = Vector256<float>.Zero;
        for (int i = 0; i < n; i += 8) acc = Fma.MultiplyAdd(Widen(x + i), Widen(y + i), acc);
        return HalfSums.Halves(acc);
    }

    private static float GemmPortable(ushort* x, ushort* y, int n)
    {
        Vector128<float> low = Vector128<float>.Zero, high = low;
        for (int i = 0; i < n; i += 8)
        {
            (Vector128<float> xl, Vector128<float> xh) = WidenPortable(x + i);
            (Vector128<float> yl, Vector128<float> yh) = WidenPortable(y + i);
            low = Vector128.FusedMultiplyAdd(xl, yl, low);
            high = Vector128.FusedMultiplyAdd(xh, yh, high);
        }
        return HalfSums.Halves(low, high);
    }

    /// <summary>ggml_vec_dot_f16: four accumulators over steps of 32, reduced; the rest in double.</summary>
    private static float VecDotAvx2(ushort* x, ushort* y, int n)
    {
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            a0 = Fma.MultiplyAdd(Widen(x + i), Widen(y + i), a0);
            a1 = Fma.MultiplyAdd(Widen(x + i + 8), Widen(y + i + 8), a1);
            a2 = Fma.MultiplyAdd(Widen(x + i + 16), Widen(y + i + 16), a2);
            a3 = Fma.MultiplyAdd(Widen(x + i + 24), Widen(y + i + 24), a3);
        }
        return Tail(x, y, i, n, HalfSums.Reduce4(a0, a1, a2, a3));
    }

    private static float VecDotPortable(ushort* x, ushort* y, int n)
    {
        Span<Vector128<float>> acc = stackalloc Vector128<float>[8]; // four 8-lane accumulators as (low, high) halves
        acc.Clear();
        int i = 0;
        for (; i + 32 <= n; i += 32)
            for (int j = 0; j < 4; j++)
            {
                (Vector128<float> xl, Vector128<float> xh) = WidenPortable(x + i + 8 * j);
                (Vector128<float> yl, Vector128<float> yh) = WidenPortable(y + i + 8 * j);
                acc[2 * j] = Vector128.FusedMultiplyAdd(xl, yl, acc[2 * j]);
                acc[2 * j + 1] = Vector128.FusedMultiplyAdd(xh, yh, acc[2 * j + 1]);
            }
        Vector128<float> low = (acc[0] + acc[4]) + (acc[2] + acc[6]), high = (acc[1] + acc[5]) + (acc[3] + acc[7]);
        return Tail(x, y, i, n, HalfSums.Pairs(low, high));
    }

    /// <summary>ggml adds the products past the last whole step to the reduced sum in double (each product is exact in float).</summary>
    private static float Tail(ushort* x, ushort* y, int i, int n, float reduced)
    {
        double sum = reduced;
        for (; i < n; i++) sum += Fp16.ToSingle(x[i]) * Fp16.ToSingle(y[i]);
        return (float)sum;
    }

    private static Vector256<float> Widen(ushort* p) => Fp16.Widen(Avx2.ConvertToVector256Int32(p).AsUInt32());

    private static (Vector128<float> Low, Vector128<float> High) WidenPortable(ushort* p)
    {
        (Vector128<uint> low, Vector128<uint> high) = Vector128.Widen(Vector128.Load(p));
        return (Fp16.Widen(low), Fp16.Widen(high));
    }
}
