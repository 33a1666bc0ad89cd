using System.Runtime.CompilerServices;
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

/// <summary>Byte offsets in <see cref="BlockQ8_0"/>, for kernels that walk Q8_0 rows as bytes: <c>f16 d; int8 qs[32]</c>.</summary>
internal static class Q8_0Layout
{
    public const int BlockSize = BlockQ8_0.Values;
    public const int BlockBytes = 34;
    public const int ScaleOffset = 0;
    public const int QuantsOffset = 2;
}

/// <summary>
/// Q8_0: symmetric 8-bit blocks of 32, x = d·q. Also the activation format of Q4_0, Q5_0 and Q8_0 itself, so
/// <see cref="Quantize"/> follows ggml's CPU <c>quantize_row_q8_0</c> (the x86 SIMD one the matmul uses: scale
/// 127/amax, rounding half to even), bit for bit. ggml's weight quantizer differs only in rounding ties away from
/// zero; it ignores importance, and so does this one.
/// </summary>
public sealed unsafe class Q8_0Format : WeightFormat
{
    private static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2, KernelPath.AvxVnni, KernelPath.Avx512];

    public override GgmlType Type => GgmlType.Q8_0;
    public override GgmlType DotActivationType => GgmlType.Q8_0;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => Block32Kernels<Q8_0Kernels>.Dequantize(blocks, values);

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        RowGuard.Importance(importance, values.Length);
        Quantize(values, blocks, BestPath);
    }

    /// <summary>The encoder through a chosen path (Scalar, or Avx2 where supported), so tests can hold both to ggml.</summary>
    internal void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, KernelPath path)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        bool simd = KernelDispatch.UpToAvx2(path) == KernelPath.Avx2;
        fixed (float* x = values)
        fixed (byte* dst = blocks)
        {
            var b = (BlockQ8_0*)dst;
            for (int i = 0; i < nb; i++)
                b[i].D = simd ? QuantizeBlockAvx2(x + i * BlockQ8_0.Values, b[i].Qs, out _, out _)
                              : QuantizeBlock(new ReadOnlySpan<float>(x + i * BlockQ8_0.Values, BlockQ8_0.Values), ref b[i].Qs[0], out _, out _);
        }
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

    /// <summary><see cref="QuantizeBlock"/> for 32 values with AVX2, the instruction sequence of ggml's quantize_row_q8_0.</summary>
    internal static ushort QuantizeBlockAvx2(float* x, sbyte* qs, out float d, out int sum)
    {
        Vector256<float> v0 = Avx.LoadVector256(x), v1 = Avx.LoadVector256(x + 8), v2 = Avx.LoadVector256(x + 16), v3 = Avx.LoadVector256(x + 24);
        Vector256<float> signBit = Vector256.Create(-0f);
        Vector256<float> maxAbs = Avx.Max(Avx.Max(Avx.AndNot(signBit, v0), Avx.AndNot(signBit, v1)), Avx.Max(Avx.AndNot(signBit, v2), Avx.AndNot(signBit, v3)));
        Vector128<float> max4 = Sse.Max(maxAbs.GetUpper(), maxAbs.GetLower());
        max4 = Sse.Max(max4, Sse.MoveHighToLow(max4, max4));
        max4 = Sse.MaxScalar(max4, Sse3.MoveHighAndDuplicate(max4));
        float amax = max4.ToScalar();
        d = amax / 127f;
        var id = Vector256.Create(amax != 0 ? 127f / amax : 0f);
        // vcvtps2dq after rounding half to even; out-of-range values become int.MinValue, as in ggml.
        Vector256<int> i0 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(Avx.Multiply(v0, id)));
        Vector256<int> i1 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(Avx.Multiply(v1, id)));
        Vector256<int> i2 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(Avx.Multiply(v2, id)));
        Vector256<int> i3 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(Avx.Multiply(v3, id)));
        sum = Vector256.Sum((i0 + i1) + (i2 + i3));
        PackStore(i0, i1, i2, i3, qs);
        return Fp16.FromSingle(d);
    }

    /// <summary>Narrows 32 int32 to int8 with saturation and stores them in order (packs work per 128-bit lane, the permute restores the order).</summary>
    internal static void PackStore(Vector256<int> i0, Vector256<int> i1, Vector256<int> i2, Vector256<int> i3, sbyte* destination)
    {
        Vector256<short> s01 = Avx2.PackSignedSaturate(i0, i1);
        Vector256<short> s23 = Avx2.PackSignedSaturate(i2, i3);
        Vector256<sbyte> bytes = Avx2.PackSignedSaturate(s01, s23);
        Avx2.PermuteVar8x32(bytes.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsSByte().Store(destination);
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
        return DotOn(weights, activations, n, KernelDispatch.UpToAvx512(path, vnni: true));
    }

    internal override float DotUnchecked(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        DotOn(weights, activations, n, path);

    private float DotOn(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(GgmlType.Q8_0, Q8_0Layout.BlockSize, Q8_0Layout.BlockBytes, Q8_0Layout.BlockBytes, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            var x = (BlockQ8_0*)w;
            var y = (BlockQ8_0*)a;
            return path switch
            {
                KernelPath.Avx512 => DotAvx512(x, y, nb),
                KernelPath.AvxVnni => DotAvxVnni(x, y, nb),
                _ => Block32Kernels<Q8_0Kernels>.Run(w, a, nb, path),
            };
        }
    }

    /// <summary>As the AVX2 loop (<see cref="Block32Kernels{TBlock}"/>), with one vpdpbusd per block in place of vpmaddubsw + vpmaddwd.</summary>
    private static float DotAvxVnni(BlockQ8_0* x, BlockQ8_0* y, int nb)
    {
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0;
        int i = 0;
        for (; i + 2 <= nb; i += 2)
        {
            acc0 = Fma.MultiplyAdd(Vector256.Create(Fp16.Lookup(x[i].D) * Fp16.Lookup(y[i].D)), BlockDotVnni(x + i, y + i), acc0);
            acc1 = Fma.MultiplyAdd(Vector256.Create(Fp16.Lookup(x[i + 1].D) * Fp16.Lookup(y[i + 1].D)), BlockDotVnni(x + i + 1, y + i + 1), acc1);
        }
        if (i < nb) acc0 = Fma.MultiplyAdd(Vector256.Create(Fp16.Lookup(x[i].D) * Fp16.Lookup(y[i].D)), BlockDotVnni(x + i, y + i), acc0);
        return Vector256.Sum(acc0 + acc1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockDotVnni(BlockQ8_0* x, BlockQ8_0* y) =>
        Avx.ConvertToVector256Single(Int8SimdWide.DotQuadsVnni(Vector256.Load(x->Qs), Vector256.Load(y->Qs)));

    /// <summary>
    /// AVX-512: two blocks per 512-bit register (block i in the low half, i+1 in the high half, each half scaled by
    /// its own d·d'), four blocks per step into two accumulators.
    /// </summary>
    private static float DotAvx512(BlockQ8_0* x, BlockQ8_0* y, int nb)
    {
        Vector512<float> acc0 = Vector512<float>.Zero, acc1 = acc0;
        int i = 0;
        for (; i + 4 <= nb; i += 4)
        {
            acc0 = Vector512.FusedMultiplyAdd(PairScale(x + i, y + i), PairDot(x + i, y + i), acc0);
            acc1 = Vector512.FusedMultiplyAdd(PairScale(x + i + 2, y + i + 2), PairDot(x + i + 2, y + i + 2), acc1);
        }
        if (i + 2 <= nb)
        {
            acc0 = Vector512.FusedMultiplyAdd(PairScale(x + i, y + i), PairDot(x + i, y + i), acc0);
            i += 2;
        }
        float sum = Int8SimdWide.HorizontalSum(acc0 + acc1);
        if (i < nb) sum += Vector256.Sum(BlockDot(x + i, y + i)) * (Fp16.Lookup(x[i].D) * Fp16.Lookup(y[i].D));
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> PairDot(BlockQ8_0* x, BlockQ8_0* y)
    {
        Vector512<sbyte> xq = Vector512.Create(Vector256.Load(x[0].Qs), Vector256.Load(x[1].Qs));
        Vector512<sbyte> yq = Vector512.Create(Vector256.Load(y[0].Qs), Vector256.Load(y[1].Qs));
        return Vector512.ConvertToSingle(Int8SimdWide.DotQuads(xq, yq));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> PairScale(BlockQ8_0* x, BlockQ8_0* y) =>
        Vector512.Create(Vector256.Create(Fp16.Lookup(x[0].D) * Fp16.Lookup(y[0].D)), Vector256.Create(Fp16.Lookup(x[1].D) * Fp16.Lookup(y[1].D)));

    /// <summary>The eight int32 partial sums of one block's q·qy, as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockDot(BlockQ8_0* x, BlockQ8_0* y)
    {
        return Avx.ConvertToVector256Single(Int8Simd.DotQuadsAvx2(Vector256.Load(x->Qs), Vector256.Load(y->Qs)));
    }
}

/// <summary>Q8_0 × Q8_0 blocks for <see cref="Block32Kernels{TBlock}"/>: the int8 values as stored.</summary>
internal readonly unsafe struct Q8_0Kernels : IBlock32Kernels
{
    public static GgmlType Type => GgmlType.Q8_0;
    public static int BlockBytes => Q8_0Layout.BlockBytes;
    public static bool PairsWithQ8_1 => false;
    public static bool HasMinimum => false;

    public static int Products(byte* block, sbyte* a) => Int8Products((sbyte*)(block + Q8_0Layout.QuantsOffset), a);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector128<sbyte> First, Vector128<sbyte> Second) Levels(byte* block) =>
        (Vector128.Load((sbyte*)(block + Q8_0Layout.QuantsOffset)), Vector128.Load((sbyte*)(block + Q8_0Layout.QuantsOffset + 16)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> ProductsAvx2(byte* block, sbyte* a) =>
        Int8Simd.DotQuadsAvx2(Vector256.Load((sbyte*)(block + Q8_0Layout.QuantsOffset)), Vector256.Load(a));

    /// <summary>Σ q·a over 32 int8 pairs (shared with Q8_1, whose values sit at another offset).</summary>
    internal static int Int8Products(sbyte* q, sbyte* a)
    {
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += q[j] * a[j];
        return sum;
    }
}
