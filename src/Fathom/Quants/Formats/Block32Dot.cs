using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// The type-specific half of <see cref="Block32Dot{TBlock}"/>: a legacy weight block of 32 values (Q4_0, Q4_1, Q5_0,
/// Q5_1, Q8_0, Q8_1) that starts with its fp16 scale d, times one block of Q8_0 or Q8_1 activations. Implemented by
/// empty structs, so the JIT compiles each kernel loop once per type with these members inlined.
/// </summary>
internal unsafe interface IBlock32Dot
{
    /// <summary>Bytes of one weight block.</summary>
    static abstract int BlockBytes { get; }

    /// <summary>True when the activations are Q8_1 (<c>d, s, qs[32]</c>), false for Q8_0 (<c>d, qs[32]</c>).</summary>
    static abstract bool PairsWithQ8_1 { get; }

    /// <summary>
    /// True when the block stores an fp16 minimum m right after d (Q4_1, Q5_1; x = d·q + m): the dot then adds m·s per
    /// block, s = dy·Σqy being the Q8_1 activation block's second field.
    /// </summary>
    static abstract bool HasMinimum { get; }

    /// <summary>Σ q·qy over the block's 32 integer levels q and the activations' int8 values, exactly (the reference).</summary>
    static abstract int Products(byte* block, sbyte* activations);

    /// <summary>The same sum as four int32 partial sums, with Vector128 only (any ISA).</summary>
    static abstract Vector128<int> ProductsPortable(byte* block, sbyte* activations);

    /// <summary>The same sum as eight int32 partial sums (AVX2).</summary>
    static abstract Vector256<int> ProductsAvx2(byte* block, sbyte* activations);
}

/// <summary>
/// The block loops every legacy 32-value format's dot product shares: Σ_blocks d·dy·Σ q·qy (+ m·s), on the scalar,
/// Vector128 and AVX2 paths. Only the per-block integer products differ by type (<see cref="IBlock32Dot"/>).
/// </summary>
internal static unsafe class Block32Dot<TBlock> where TBlock : struct, IBlock32Dot
{
    // Inlined even in cold tail loops: a call there would make the JIT keep the accumulators in memory.
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

    /// <summary>m·s of one block, for types with a minimum (offset 2 in both blocks); 0 otherwise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MinimumTerm(byte* x, byte* y) =>
        TBlock.HasMinimum ? Fp16.Lookup(*(ushort*)(x + 2)) * Fp16.Lookup(*(ushort*)(y + 2)) : 0f;

    /// <summary>The plain reference: per block, the exact integer sum times d·dy, plus m·s.</summary>
    public static float Scalar(byte* x, byte* y, int nb)
    {
        float sum = 0;
        for (int i = 0; i < nb; i++, x += TBlock.BlockBytes, y += ActivationBytes)
        {
            int sumi = TBlock.Products(x, (sbyte*)(y + ActivationQuantsOffset));
            sum += sumi * (Fp16.Lookup(*(ushort*)x) * Fp16.Lookup(*(ushort*)y)) + MinimumTerm(x, y);
        }
        return sum;
    }

    public static float Portable(byte* x, byte* y, int nb)
    {
        Vector128<float> sum = Vector128<float>.Zero;
        float minimumTerms = 0;
        for (int i = 0; i < nb; i++, x += TBlock.BlockBytes, y += ActivationBytes)
        {
            Vector128<int> products = TBlock.ProductsPortable(x, (sbyte*)(y + ActivationQuantsOffset));
            sum += Vector128.ConvertToSingle(products) * Vector128.Create(Fp16.Lookup(*(ushort*)x) * Fp16.Lookup(*(ushort*)y));
            minimumTerms += MinimumTerm(x, y);
        }
        return Vector128.Sum(sum) + minimumTerms;
    }

    /// <summary>
    /// Four blocks per step into four accumulators (each FMA chain then waits on its predecessor only every fourth
    /// block), walking pointers rather than indexing by the odd block sizes, with d·dy formed from two broadcast loads
    /// of the fp16 table. Measured faster than a two-block loop for every type (docs/weight-formats.md).
    /// </summary>
    public static float Avx2(byte* x, byte* y, int nb)
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
