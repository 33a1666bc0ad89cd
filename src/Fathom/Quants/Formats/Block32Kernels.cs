using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// The type-specific half of <see cref="Block32Kernels{TBlock}"/>: a legacy weight block of 32 values (Q4_0, Q4_1,
/// Q5_0, Q5_1, Q8_0, Q8_1) that starts with its fp16 scale d, paired with Q8_0 or Q8_1 activation blocks.
/// Implemented by empty structs, so the JIT compiles each shared loop once per type with these members inlined.
/// </summary>
internal unsafe interface IBlock32Kernels
{
    static abstract GgmlType Type { get; }

    /// <summary>Bytes of one weight block.</summary>
    static abstract int BlockBytes { get; }

    /// <summary>True when the activations are Q8_1 (<c>d, s, qs[32]</c>), false for Q8_0 (<c>d, qs[32]</c>).</summary>
    static abstract bool PairsWithQ8_1 { get; }

    /// <summary>
    /// True when the block stores an fp16 minimum m right after d (Q4_1, Q5_1; x = d·q + m): the dot then adds m·s per
    /// block, s = dy·Σqy being the Q8_1 activation block's second field.
    /// </summary>
    static abstract bool HasMinimum { get; }

    /// <summary>Σ q·qy over the block's 32 integer levels q and the activations' int8 values, exactly: the scalar reference.</summary>
    static abstract int Products(byte* block, sbyte* activations);

    /// <summary>The block's 32 integer levels q in value order (0–15, then 16–31), with Vector128 only (any ISA).</summary>
    static abstract (Vector128<sbyte> First, Vector128<sbyte> Second) Levels(byte* block);

    /// <summary>Σ q·qy as eight int32 partial sums (AVX2).</summary>
    static abstract Vector256<int> ProductsAvx2(byte* block, sbyte* activations);
}

/// <summary>
/// What every legacy 32-value format shares: decoding (x = d·q, or d·q + m) and the dot product with its activation
/// row, Σ_blocks d·dy·Σ q·qy (+ m·s), on the scalar, Vector128 and AVX2 paths. Only the block's levels differ by type
/// (<see cref="IBlock32Kernels"/>).
/// </summary>
internal static unsafe class Block32Kernels<TBlock> where TBlock : struct, IBlock32Kernels
{
    public static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];

    // Inlined even where the JIT's inlining budget runs out (tail loops): a call there makes it keep the
    // accumulators in memory across the whole loop.
    private static int ActivationBytes
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => TBlock.PairsWithQ8_1 ? 36 : Q8_0Layout.BlockBytes;
    }

    private static int ActivationQuantsOffset
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => TBlock.PairsWithQ8_1 ? 4 : Q8_0Layout.QuantsOffset;
    }

    /// <summary>Decodes whole blocks, bit-exact with ggml's to_float: d·q, or d·q + m (multiply, then add).</summary>
    public static void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        int nb = RowGuard.Blocks(GgmlTypes.Layout(TBlock.Type), values.Length, blocks.Length);
        fixed (byte* src = blocks)
        fixed (float* dst = values)
        {
            byte* x = src;
            for (int i = 0; i < nb; i++, x += TBlock.BlockBytes)
            {
                var d = Vector128.Create(Fp16.ToSingle(*(ushort*)x));
                (Vector128<sbyte> first, Vector128<sbyte> second) = TBlock.Levels(x);
                if (TBlock.HasMinimum)
                {
                    var m = Vector128.Create(Fp16.ToSingle(*(ushort*)(x + 2)));
                    Int8Simd.ScaleStore(first, d, m, dst + i * 32);
                    Int8Simd.ScaleStore(second, d, m, dst + i * 32 + 16);
                }
                else
                {
                    Int8Simd.ScaleStore(first, d, dst + i * 32);
                    Int8Simd.ScaleStore(second, d, dst + i * 32 + 16);
                }
            }
        }
    }

    /// <summary>The dot product on the widest of Scalar, Portable and Avx2 at or below <paramref name="path"/> that this CPU runs.</summary>
    public static float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(TBlock.Type, 32, TBlock.BlockBytes, ActivationBytes, weights.Length, activations.Length, n);
        fixed (byte* x = weights)
        fixed (byte* y = activations)
            return Run(x, y, nb, KernelDispatch.UpToAvx2(path));
    }

    /// <summary>The kernel of an already resolved path (Scalar, Portable or Avx2) on checked operands.</summary>
    public static float Run(byte* x, byte* y, int nb, KernelPath path) => path switch
    {
        KernelPath.Avx2 => Avx2(x, y, nb),
        KernelPath.Portable => Portable(x, y, nb),
        _ => Scalar(x, y, nb),
    };

    /// <summary>m·s of one block, for types with a minimum (offset 2 in both blocks); 0 otherwise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MinimumTerm(byte* x, byte* y) =>
        TBlock.HasMinimum ? Fp16.Lookup(*(ushort*)(x + 2)) * Fp16.Lookup(*(ushort*)(y + 2)) : 0f;

    /// <summary>The plain reference: per block, the exact integer sum times d·dy, plus m·s.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // its own inlining budget for the block helpers, and one copy for every caller
    private static float Scalar(byte* x, byte* y, int nb)
    {
        float sum = 0;
        for (int i = 0; i < nb; i++, x += TBlock.BlockBytes, y += ActivationBytes)
        {
            int sumi = TBlock.Products(x, (sbyte*)(y + ActivationQuantsOffset));
            sum += sumi * (Fp16.Lookup(*(ushort*)x) * Fp16.Lookup(*(ushort*)y)) + MinimumTerm(x, y);
        }
        return sum;
    }

    /// <summary>Vector128 only: the levels times the int8 activations, widened to int16 and int32 (exact).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // its own inlining budget for the block helpers, and one copy for every caller
    private static float Portable(byte* x, byte* y, int nb)
    {
        Vector128<float> sum = Vector128<float>.Zero;
        float minimumTerms = 0;
        for (int i = 0; i < nb; i++, x += TBlock.BlockBytes, y += ActivationBytes)
        {
            (Vector128<sbyte> first, Vector128<sbyte> second) = TBlock.Levels(x);
            sbyte* qy = (sbyte*)(y + ActivationQuantsOffset);
            Vector128<int> products = Int8Simd.DotPortable(first, Vector128.Load(qy)) + Int8Simd.DotPortable(second, Vector128.Load(qy + 16));
            sum += Vector128.ConvertToSingle(products) * Vector128.Create(Fp16.Lookup(*(ushort*)x) * Fp16.Lookup(*(ushort*)y));
            minimumTerms += MinimumTerm(x, y);
        }
        return Vector128.Sum(sum) + minimumTerms;
    }

    /// <summary>
    /// Four blocks per step into four accumulators (each FMA chain then waits on its predecessor only every fourth
    /// block), walking pointers rather than indexing by the odd block sizes, with d·dy formed from two broadcast loads
    /// of the fp16 table. Measured faster than the two-block loops each type had before (docs/weight-formats.md).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // its own inlining budget for the block helpers, and one copy for every caller
    private static float Avx2(byte* x, byte* y, int nb)
    {
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
        float minimumTerms = 0;
        byte* end = x + (nint)nb * TBlock.BlockBytes, end4 = x + (nint)(nb & ~3) * TBlock.BlockBytes;
        for (; x < end4; x += 4 * TBlock.BlockBytes, y += 4 * ActivationBytes)
        {
            acc0 = Fma.MultiplyAdd(Scale(x, y), Products(x, y), acc0);
            acc1 = Fma.MultiplyAdd(Scale(x + TBlock.BlockBytes, y + ActivationBytes), Products(x + TBlock.BlockBytes, y + ActivationBytes), acc1);
            acc2 = Fma.MultiplyAdd(Scale(x + 2 * TBlock.BlockBytes, y + 2 * ActivationBytes), Products(x + 2 * TBlock.BlockBytes, y + 2 * ActivationBytes), acc2);
            acc3 = Fma.MultiplyAdd(Scale(x + 3 * TBlock.BlockBytes, y + 3 * ActivationBytes), Products(x + 3 * TBlock.BlockBytes, y + 3 * ActivationBytes), acc3);
            if (TBlock.HasMinimum)
            {
                minimumTerms += (MinimumTerm(x, y) + MinimumTerm(x + TBlock.BlockBytes, y + ActivationBytes))
                              + (MinimumTerm(x + 2 * TBlock.BlockBytes, y + 2 * ActivationBytes) + MinimumTerm(x + 3 * TBlock.BlockBytes, y + 3 * ActivationBytes));
            }
        }
        for (; x < end; x += TBlock.BlockBytes, y += ActivationBytes)
        {
            acc0 = Fma.MultiplyAdd(Scale(x, y), Products(x, y), acc0);
            minimumTerms += MinimumTerm(x, y);
        }
        return Vector256.Sum((acc0 + acc1) + (acc2 + acc3)) + minimumTerms;
    }

    /// <summary>d·dy in all eight lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Scale(byte* x, byte* y) =>
        Vector256.Create(Fp16.Lookup(*(ushort*)x)) * Vector256.Create(Fp16.Lookup(*(ushort*)y));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Products(byte* x, byte* y) =>
        Avx.ConvertToVector256Single(TBlock.ProductsAvx2(x, (sbyte*)(y + ActivationQuantsOffset)));
}
