using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>BF16: the upper 16 bits of binary32 values; encoding rounds to nearest even like ggml's. Its dot pairs with BF16 activations.</summary>
public sealed unsafe class BF16Format : WeightFormat
{
    private static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];
    private readonly KernelDispatch _dispatch = new(Paths);

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
        {
            return _dispatch.Resolve(path) switch
            {
                KernelPath.Avx2 => DotAvx2((ushort*)w, (ushort*)a, n),
                KernelPath.Portable => DotPortable((ushort*)w, (ushort*)a, n),
                _ => DotScalar((ushort*)w, (ushort*)a, n),
            };
        }
    }

    /// <summary>Accumulates in double, as ggml's scalar vec_dot_bf16 does.</summary>
    private static float DotScalar(ushort* x, ushort* y, int n)
    {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += (double)Bf16.ToSingle(x[i]) * Bf16.ToSingle(y[i]);
        return (float)sum;
    }

    private static float DotPortable(ushort* x, ushort* y, int n)
    {
        Vector128<float> a0 = Vector128<float>.Zero, a1 = a0;
        int i = 0;
        for (; i + 8 <= n; i += 8)
        {
            (Vector128<uint> xl, Vector128<uint> xh) = Vector128.Widen(Vector128.Load(x + i));
            (Vector128<uint> yl, Vector128<uint> yh) = Vector128.Widen(Vector128.Load(y + i));
            a0 = Vector128.FusedMultiplyAdd((xl << 16).AsSingle(), (yl << 16).AsSingle(), a0);
            a1 = Vector128.FusedMultiplyAdd((xh << 16).AsSingle(), (yh << 16).AsSingle(), a1);
        }
        float sum = Vector128.Sum(a0 + a1);
        for (; i < n; i++) sum += Bf16.ToSingle(x[i]) * Bf16.ToSingle(y[i]);
        return sum;
    }

    private static float DotAvx2(ushort* x, ushort* y, int n)
    {
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            a0 = Fma.MultiplyAdd(Widen(x + i), Widen(y + i), a0);
            a1 = Fma.MultiplyAdd(Widen(x + i + 8), Widen(y + i + 8), a1);
        }
        for (; i + 8 <= n; i += 8) a0 = Fma.MultiplyAdd(Widen(x + i), Widen(y + i), a0);
        float sum = Vector256.Sum(a0 + a1);
        for (; i < n; i++) sum += Bf16.ToSingle(x[i]) * Bf16.ToSingle(y[i]);
        return sum;
    }

    private static Vector256<float> Widen(ushort* p) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 16).AsSingle();
}
