using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>ggml's block_q8_0: 32 values as int8 times one fp16 scale.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ8_0
{
    public const int Values = 32;
    public ushort D;
    public fixed sbyte Qs[Values];
}

/// <summary>
/// Q8_0: symmetric 8-bit blocks of 32, x = d·q. Also the activation format of Q4_0, Q5_0 and Q8_0 itself, so
/// <see cref="Quantize"/> follows ggml's CPU <c>quantize_row_q8_0</c> (the x86 SIMD one the matmul uses: scale
/// 127/amax, rounding half to even), bit for bit. ggml's weight quantizer differs only in rounding ties away from
/// zero; it ignores importance, and so does this one.
/// </summary>
public sealed unsafe class Q8_0Format : WeightFormat
{
    private static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];
    private readonly KernelDispatch _dispatch = new(Paths);

    public override GgmlType Type => GgmlType.Q8_0;
    public override GgmlType DotActivationType => GgmlType.Q8_0;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        ReadOnlySpan<BlockQ8_0> b = MemoryMarshal.Cast<byte, BlockQ8_0>(blocks);
        for (int i = 0; i < nb; i++)
        {
            float d = Fp16.ToSingle(b[i].D);
            Span<float> y = values.Slice(i * BlockQ8_0.Values, BlockQ8_0.Values);
            for (int j = 0; j < BlockQ8_0.Values; j++) y[j] = b[i].Qs[j] * d;
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        RowGuard.Importance(importance, values.Length);
        Span<BlockQ8_0> b = MemoryMarshal.Cast<byte, BlockQ8_0>(blocks);
        for (int i = 0; i < nb; i++)
            b[i].D = QuantizeBlock(values.Slice(i * BlockQ8_0.Values, BlockQ8_0.Values), ref b[i].Qs[0], out _, out _);
    }

    /// <summary>
    /// One block as ggml's CPU activation quantizer does it; returns the fp16 scale, the float scale and the sum
    /// of the quants before they are narrowed to int8 (Q8_1 stores d·sum).
    /// </summary>
    internal static ushort QuantizeBlock(ReadOnlySpan<float> x, ref sbyte qs, out float d, out int sum)
    {
        float amax = 0;
        for (int j = 0; j < x.Length; j++) amax = MathF.Max(amax, MathF.Abs(x[j]));
        d = amax / 127f;
        float id = amax != 0 ? 127f / amax : 0f;
        Span<sbyte> q = MemoryMarshal.CreateSpan(ref qs, x.Length);
        sum = 0;
        for (int j = 0; j < x.Length; j++)
        {
            int v = RoundToInt32(x[j] * id);
            sum = unchecked(sum + v);
            q[j] = (sbyte)Math.Clamp(v, sbyte.MinValue, sbyte.MaxValue);
        }
        return Fp16.FromSingle(d);
    }

    /// <summary>
    /// vcvtps2dq after rounding to even: out-of-range values and NaN become int.MinValue (x86's "integer
    /// indefinite"), which happens when amax is so small that 127/amax overflows to infinity.
    /// </summary>
    private static int RoundToInt32(float value)
    {
        float rounded = MathF.Round(value, MidpointRounding.ToEven);
        return rounded is >= -2147483648f and < 2147483648f ? (int)rounded : int.MinValue;
    }

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(this, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            var x = (BlockQ8_0*)w;
            var y = (BlockQ8_0*)a;
            return _dispatch.Resolve(path) switch
            {
                KernelPath.Avx2 => DotAvx2(x, y, nb),
                KernelPath.Portable => DotPortable(x, y, nb),
                _ => DotScalar(x, y, nb),
            };
        }
    }

    private static float DotScalar(BlockQ8_0* x, BlockQ8_0* y, int nb)
    {
        float sum = 0;
        for (int i = 0; i < nb; i++)
        {
            int sumi = 0;
            for (int j = 0; j < BlockQ8_0.Values; j++) sumi += x[i].Qs[j] * y[i].Qs[j];
            sum += sumi * (Fp16.ToSingle(x[i].D) * Fp16.ToSingle(y[i].D));
        }
        return sum;
    }

    private static float DotPortable(BlockQ8_0* x, BlockQ8_0* y, int nb)
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

    private static float DotAvx2(BlockQ8_0* x, BlockQ8_0* y, int nb)
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
