using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>ggml's block_q8_K: float scale, 256 int8 values, and the sums of each 16 values (K-quant kernels fold their minimums with them).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal unsafe struct BlockQ8_K
{
    public const int Values = 256;
    public const int Groups = Values / 16;
    public float D;
    public fixed sbyte Qs[Values];
    public fixed short Bsums[Groups];
}

/// <summary>
/// Byte offsets in <see cref="BlockQ8_K"/>, for the K-quant, IQ and ternary dot kernels that walk Q8_K rows as bytes:
/// <c>float d; int8 qs[256]; int16 bsums[16]</c> (bsums[i] is the sum of qs[16i..16i+15]).
/// </summary>
internal static class Q8KLayout
{
    public const int BlockSize = BlockQ8_K.Values;
    public const int BlockBytes = 292;
    public const int ScaleOffset = 0;
    public const int QuantsOffset = 4;
    public const int SumsOffset = 260;

    /// <summary>The sum of a block's 256 quants, from its 16 partial sums.</summary>
    public static unsafe int QuantSum(byte* block)
    {
        short* bsums = (short*)(block + SumsOffset);
        int total = 0;
        for (int i = 0; i < 16; i++) total += bsums[i];
        return total;
    }
}

/// <summary>
/// Q8_K: the activation format of the K-quants and IQ types, 256 values per block, x = d·q with a float d.
/// <see cref="Quantize"/> matches ggml's CPU <c>quantize_row_q8_K</c> bit for bit: the value of largest magnitude
/// maps to −127 exactly (so |q| ≤ 127 and the int8 SIMD products never saturate). ggml has no Q8_K·Q8_K kernel;
/// Fathom's is there so the format is complete.
/// </summary>
public sealed unsafe class Q8_KFormat : WeightFormat
{
    private static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];
    private readonly KernelDispatch _dispatch = new(Paths);

    public override GgmlType Type => GgmlType.Q8_K;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        fixed (byte* src = blocks)
        fixed (float* dst = values)
        {
            var b = (BlockQ8_K*)src;
            for (int i = 0; i < nb; i++)
            {
                var d = Vector128.Create(b[i].D);
                for (int j = 0; j < BlockQ8_K.Values; j += 16)
                    Int8Simd.ScaleStore(Vector128.Load(b[i].Qs + j), d, dst + i * BlockQ8_K.Values + j);
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
        Span<BlockQ8_K> b = MemoryMarshal.Cast<byte, BlockQ8_K>(blocks);
        fixed (float* x = values)
        {
            for (int i = 0; i < nb; i++)
            {
                if (simd) QuantizeBlockAvx2(x + i * BlockQ8_K.Values, ref b[i]);
                else QuantizeBlock(values.Slice(i * BlockQ8_K.Values, BlockQ8_K.Values), ref b[i]);
            }
        }
    }

    /// <summary>ggml's quantize_row_q8_K for one block.</summary>
    private static void QuantizeBlock(ReadOnlySpan<float> x, ref BlockQ8_K block)
    {
        float amax = 0, max = 0;
        for (int j = 0; j < BlockQ8_K.Values; j++)
        {
            float ax = MathF.Abs(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        if (amax == 0)
        {
            MemoryMarshal.AsBytes(MemoryMarshal.CreateSpan(ref block, 1)).Clear();
            return;
        }
        float iscale = -127f / max;
        for (int j = 0; j < BlockQ8_K.Values; j++) block.Qs[j] = (sbyte)Math.Min(127, QuantMath.NearestInt(iscale * x[j]));
        for (int g = 0; g < BlockQ8_K.Groups; g++)
        {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += block.Qs[g * 16 + j];
            block.Bsums[g] = (short)sum;
        }
        block.D = 1 / iscale;
    }

    /// <summary><see cref="QuantizeBlock"/> with AVX2: the same operations on eight values at a time, bit-identical.</summary>
    private static void QuantizeBlockAvx2(float* x, ref BlockQ8_K block)
    {
        Vector256<float> signBit = Vector256.Create(-0f);
        Vector256<float> maxAbs = Vector256<float>.Zero;
        for (int j = 0; j < BlockQ8_K.Values; j += 8) maxAbs = Avx.Max(maxAbs, Avx.AndNot(signBit, Avx.LoadVector256(x + j)));
        Vector128<float> max4 = Sse.Max(maxAbs.GetUpper(), maxAbs.GetLower());
        max4 = Sse.Max(max4, Sse.MoveHighToLow(max4, max4));
        float amax = Sse.MaxScalar(max4, Sse3.MoveHighAndDuplicate(max4)).ToScalar();
        if (amax == 0)
        {
            MemoryMarshal.AsBytes(MemoryMarshal.CreateSpan(ref block, 1)).Clear();
            return;
        }
        // The signed value of the first element of largest magnitude, as the scalar scan keeps it.
        float max = 0;
        var target = Vector256.Create(amax);
        for (int j = 0; j < BlockQ8_K.Values; j += 8)
        {
            uint hits = Vector256.ExtractMostSignificantBits(Avx.CompareEqual(Avx.AndNot(signBit, Avx.LoadVector256(x + j)), target));
            if (hits != 0) { max = x[j + BitOperations.TrailingZeroCount(hits)]; break; }
        }
        float iscale = -127f / max;
        var scale = Vector256.Create(iscale);
        var magic = Vector256.Create(12582912f);
        var mantissa = Vector256.Create(0x007fffff);
        var offset = Vector256.Create(0x00400000);
        var top = Vector256.Create(127);
        fixed (sbyte* qs = block.Qs)
        fixed (short* bsums = block.Bsums)
        {
            for (int j = 0; j < BlockQ8_K.Values; j += 32)
            {
                // nearest_int on each lane: the product is rounded to float first, then shifted into the mantissa.
                Vector256<int> i0 = ToInt8(Avx2.Min((Avx.Add(Avx.Multiply(Avx.LoadVector256(x + j), scale), magic).AsInt32() & mantissa) - offset, top));
                Vector256<int> i1 = ToInt8(Avx2.Min((Avx.Add(Avx.Multiply(Avx.LoadVector256(x + j + 8), scale), magic).AsInt32() & mantissa) - offset, top));
                Vector256<int> i2 = ToInt8(Avx2.Min((Avx.Add(Avx.Multiply(Avx.LoadVector256(x + j + 16), scale), magic).AsInt32() & mantissa) - offset, top));
                Vector256<int> i3 = ToInt8(Avx2.Min((Avx.Add(Avx.Multiply(Avx.LoadVector256(x + j + 24), scale), magic).AsInt32() & mantissa) - offset, top));
                Q8_0Format.PackStore(i0, i1, i2, i3, qs + j);
                bsums[j / 16] = (short)Vector256.Sum(i0 + i1);
                bsums[j / 16 + 1] = (short)Vector256.Sum(i2 + i3);
            }
        }
        block.D = 1 / iscale;
    }

    /// <summary>
    /// The int8 store of C: keep the low byte, sign-extended. Only a degenerate block (all values subnormal, so
    /// −127/max overflows) produces quants outside int8, and ggml truncates those rather than saturating.
    /// </summary>
    private static Vector256<int> ToInt8(Vector256<int> v) => Avx2.ShiftRightArithmetic(Avx2.ShiftLeftLogical(v, 24), 24);

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(this, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            var x = (BlockQ8_K*)w;
            var y = (BlockQ8_K*)a;
            return _dispatch.Resolve(path) switch
            {
                KernelPath.Avx2 => DotAvx2(x, y, nb),
                KernelPath.Portable => DotPortable(x, y, nb),
                _ => DotScalar(x, y, nb),
            };
        }
    }

    private static float DotScalar(BlockQ8_K* x, BlockQ8_K* y, int nb)
    {
        float sum = 0;
        for (int i = 0; i < nb; i++)
        {
            int sumi = 0;
            for (int j = 0; j < BlockQ8_K.Values; j++) sumi += x[i].Qs[j] * y[i].Qs[j];
            sum += x[i].D * y[i].D * sumi;
        }
        return sum;
    }

    private static float DotPortable(BlockQ8_K* x, BlockQ8_K* y, int nb)
    {
        float sum = 0;
        for (int i = 0; i < nb; i++)
        {
            Vector128<int> acc = Vector128<int>.Zero;
            for (int j = 0; j < BlockQ8_K.Values; j += 16)
                acc += Int8Simd.DotPortable(Vector128.Load(x[i].Qs + j), Vector128.Load(y[i].Qs + j));
            sum += x[i].D * y[i].D * Vector128.Sum(acc);
        }
        return sum;
    }

    private static float DotAvx2(BlockQ8_K* x, BlockQ8_K* y, int nb)
    {
        Vector256<float> acc = Vector256<float>.Zero;
        for (int i = 0; i < nb; i++)
        {
            Vector256<int> sumi = Vector256<int>.Zero;
            for (int j = 0; j < BlockQ8_K.Values; j += 32)
                sumi += Int8Simd.DotQuadsAvx2(Vector256.Load(x[i].Qs + j), Vector256.Load(y[i].Qs + j));
            acc = Fma.MultiplyAdd(Vector256.Create(x[i].D * y[i].D), Avx.ConvertToVector256Single(sumi), acc);
        }
        return Vector256.Sum(acc);
    }
}
