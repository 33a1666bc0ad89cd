using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// BF16: the upper 16 bits of binary32 values; encoding rounds to nearest even like ggml's. Its dot pairs with BF16
/// activations and adds its products in one of ggml's two orders (<see cref="DotOrder"/>): the instance in
/// <see cref="TypeTraits"/> uses llamafile's, <see cref="WithDotOrder"/> gives the other.
/// </summary>
public sealed unsafe class BF16Format : WeightFormat
{
    private static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];
    private static BF16Format? _vecDot;
    private readonly KernelDispatch _dispatch = new(Paths);

    public BF16Format() : this(DotOrder.LlamafileGemm) { }

    private BF16Format(DotOrder order) => Order = order;

    /// <summary>The order this instance's vector paths add products in.</summary>
    public DotOrder Order { get; }

    public override WeightFormat WithDotOrder(DotOrder order) => order == Order ? this
        : order == DotOrder.LlamafileGemm ? TypeTraits.For(GgmlType.BF16)
        : _vecDot ??= new BF16Format(DotOrder.GgmlVecDot);

    public override GgmlType Type => GgmlType.BF16;
    public override GgmlType DotActivationType => GgmlType.BF16;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        RowGuard.Blocks(Layout, values.Length, blocks.Length);
        int n = values.Length, i = 0;
        fixed (byte* src = blocks)
        fixed (float* dst = values)
        {
            var b = (ushort*)src;
            var y = (uint*)dst;
            for (; i + 8 <= n; i += 8)
            {
                (Vector128<uint> lo, Vector128<uint> hi) = Vector128.Widen(Vector128.Load(b + i));
                (lo << 16).Store(y + i);
                (hi << 16).Store(y + i + 4);
            }
            for (; i < n; i++) dst[i] = Bf16.ToSingle(b[i]);
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        RowGuard.Blocks(Layout, values.Length, blocks.Length);
        RowGuard.Importance(importance, values.Length);
        int n = values.Length, i = 0;
        fixed (float* src = values)
        fixed (byte* dst = blocks)
        {
            var x = (uint*)src;
            var b = (ushort*)dst;
            for (; i + 8 <= n; i += 8)
                Vector128.Narrow(Round(Vector128.Load(x + i)), Round(Vector128.Load(x + i + 4))).Store(b + i);
            for (; i < n; i++) b[i] = Bf16.FromSingle(src[i]);
        }
    }

    /// <summary><see cref="Bf16.FromSingle"/> on four lanes (result in the low 16 bits of each).</summary>
    private static Vector128<uint> Round(Vector128<uint> u)
    {
        Vector128<uint> isNaN = Vector128.GreaterThan(u & Vector128.Create(0x7fffffffu), Vector128.Create(0x7f800000u));
        Vector128<uint> rounded = (u + Vector128.Create(0x7fffu) + ((u >> 16) & Vector128<uint>.One)) >> 16;
        Vector128<uint> quietNaN = (u >> 16) | Vector128.Create(64u);
        return Vector128.ConditionalSelect(isNaN, quietNaN, rounded);
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

    /// <summary>
    /// ggml_vec_dot_bf16's AVX2 loop: four accumulators over steps of 32, each step a multiply and then an add (not
    /// fused); reduced as (c1 + c3) + (c2 + c4) and tinyBLAS's horizontal sum; the rest in double.
    /// </summary>
    private static float VecDotAvx2(ushort* x, ushort* y, int n)
    {
        Vector256<float> c1 = Vector256<float>.Zero, c2 = c1, c3 = c1, c4 = c1;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            c1 = Avx.Add(Avx.Multiply(Widen(x + i), Widen(y + i)), c1);
            c2 = Avx.Add(Avx.Multiply(Widen(x + i + 8), Widen(y + i + 8)), c2);
            c3 = Avx.Add(Avx.Multiply(Widen(x + i + 16), Widen(y + i + 16)), c3);
            c4 = Avx.Add(Avx.Multiply(Widen(x + i + 24), Widen(y + i + 24)), c4);
        }
        return HalfDot<Arithmetic>.Tail(x, y, i, n, HalfSums.Halves((c1 + c3) + (c2 + c4)));
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
                acc[2 * j] = xl * yl + acc[2 * j];
                acc[2 * j + 1] = xh * yh + acc[2 * j + 1];
            }
        Vector128<float> low = (acc[0] + acc[4]) + (acc[2] + acc[6]), high = (acc[1] + acc[5]) + (acc[3] + acc[7]);
        return HalfDot<Arithmetic>.Tail(x, y, i, n, HalfSums.Halves(low, high));
    }

    private static Vector256<float> Widen(ushort* p) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 16).AsSingle();

    private static (Vector128<float> Low, Vector128<float> High) WidenPortable(ushort* p)
    {
        (Vector128<uint> low, Vector128<uint> high) = Vector128.Widen(Vector128.Load(p));
        return ((low << 16).AsSingle(), (high << 16).AsSingle());
    }

    /// <summary>This format's part of the shared half-precision kernels (a struct, so the JIT specializes them).</summary>
    private readonly struct Arithmetic : IHalfPrecision
    {
        public static float ToSingle(ushort value) => Bf16.ToSingle(value);

        public static Vector256<float> Widen(ushort* p) => BF16Format.Widen(p);

        public static (Vector128<float> Low, Vector128<float> High) WidenPortable(ushort* p) => BF16Format.WidenPortable(p);

        public static float VecDotAvx2(ushort* x, ushort* y, int n) => BF16Format.VecDotAvx2(x, y, n);

        public static float VecDotPortable(ushort* x, ushort* y, int n) => BF16Format.VecDotPortable(x, y, n);
    }
}
