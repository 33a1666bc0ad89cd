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
    public override GgmlType Type => GgmlType.Q8_1;
    public override GgmlType DotActivationType => GgmlType.Q8_1;
    public override IReadOnlyList<KernelPath> ImplementedPaths => Block32Kernels<Q8_1Kernels>.Paths;

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => Block32Kernels<Q8_1Kernels>.Dequantize(blocks, values);

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

    public override float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        Block32Kernels<Q8_1Kernels>.Dot(weights, activations, n, path);
}

/// <summary>Q8_1 × Q8_1 blocks for <see cref="Block32Kernels{TBlock}"/>: the int8 values as stored (s plays no part, so no minimum term).</summary>
internal readonly unsafe struct Q8_1Kernels : IBlock32Kernels
{
    public static GgmlType Type => GgmlType.Q8_1;
    public static int BlockBytes => 36;
    public static bool PairsWithQ8_1 => true;
    public static bool HasMinimum => false;

    public static int Products(byte* block, sbyte* a) => Q8_0Kernels.Int8Products((sbyte*)(block + 4), a);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector128<sbyte> First, Vector128<sbyte> Second) Levels(byte* block) =>
        (Vector128.Load((sbyte*)(block + 4)), Vector128.Load((sbyte*)(block + 20)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> ProductsAvx2(byte* block, sbyte* a) => Int8Simd.DotQuadsAvx2(Vector256.Load((sbyte*)(block + 4)), Vector256.Load(a));
}
