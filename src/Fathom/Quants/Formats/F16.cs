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
            return HalfDot<Arithmetic>.Dot(_dispatch.Resolve(path), Order, (ushort*)w, (ushort*)a, n);
    }

    /// <summary>Four rows at a time in tinyBLAS's order where it applies (<see cref="HalfDot{T}.TryRows"/>).</summary>
    internal override void DotRows(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes, int n, float* output)
    {
        if (!HalfDot<Arithmetic>.TryRows(_dispatch.Resolve(BestPath), Order, weights, weightRowBytes, rows, activations, n, output))
            base.DotRows(weights, weightRowBytes, rows, activations, activationRowBytes, n, output);
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
        return HalfDot<Arithmetic>.Tail(x, y, i, n, HalfSums.Reduce4(a0, a1, a2, a3));
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
        return HalfDot<Arithmetic>.Tail(x, y, i, n, HalfSums.Pairs(low, high));
    }

    private static Vector256<float> Widen(ushort* p) => Fp16.Widen(Avx2.ConvertToVector256Int32(p).AsUInt32());

    private static (Vector128<float> Low, Vector128<float> High) WidenPortable(ushort* p)
    {
        (Vector128<uint> low, Vector128<uint> high) = Vector128.Widen(Vector128.Load(p));
        return (Fp16.Widen(low), Fp16.Widen(high));
    }

    /// <summary>This format's part of the shared half-precision kernels (a struct, so the JIT specializes them).</summary>
    private readonly struct Arithmetic : IHalfPrecision
    {
        public static float ToSingle(ushort value) => Fp16.ToSingle(value);

        public static Vector256<float> Widen(ushort* p) => F16Format.Widen(p);

        public static (Vector128<float> Low, Vector128<float> High) WidenPortable(ushort* p) => F16Format.WidenPortable(p);

        public static float VecDotAvx2(ushort* x, ushort* y, int n) => F16Format.VecDotAvx2(x, y, n);

        public static float VecDotPortable(ushort* x, ushort* y, int n) => F16Format.VecDotPortable(x, y, n);
    }
}
