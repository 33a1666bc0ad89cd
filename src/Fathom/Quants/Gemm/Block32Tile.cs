using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats;

namespace Fathom.Quants.Gemm;

/// <summary>
/// The type-specific half of <see cref="Block32Tile{TDecoder}"/>: a weight type of 32-value blocks with one fp16
/// scale each (at the block's start), whose values are that scale times small signed integers.
/// </summary>
internal unsafe interface IBlock32Decoder
{
    static abstract int BlockBytes { get; }

    /// <summary>
    /// 0 for types multiplied as |q| times the activation carrying q's sign (vpsignb); otherwise an offset that makes
    /// every level non-negative and at most 31 (Q5_0: 16, its stored 5-bit values), so the transposed tile multiplies
    /// level + offset unsigned, adds four vpmaddubsw results in int16 (|sum| ≤ 4·2·31·128 = 31,744) and subtracts
    /// offset·Σx per block afterwards.
    /// </summary>
    static abstract int LevelOffset { get; }

    /// <summary>The block's 32 integer levels in value order (each in [−127, 127]).</summary>
    static abstract Vector256<sbyte> Levels(byte* block);
}

/// <summary>
/// A 32-value block type × Q8_0 activations for one weight row and four tokens at a time (AVX2): each block's
/// levels are unpacked once and multiplied with the four tokens' int8 values; vpmaddubsw wants one unsigned operand,
/// so each token's values take the levels' signs (vpsignb), as the single-row kernels do.
/// </summary>
internal sealed unsafe class Block32Tile<TDecoder>(WeightFormat format) : FourTokenTile(format) where TDecoder : IBlock32Decoder
{
    protected override void RowTimesFour(byte* w, byte* a0, long activationRowBytes, int n, float* y, long outputStride) =>
        FourTokens(w, a0, activationRowBytes, n / Q8_0Layout.BlockSize, y, outputStride);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void FourTokens(byte* w, byte* a0, long activationRowBytes, int blocks, float* y, long outputStride)
    {
        byte* a1 = a0 + activationRowBytes, a2 = a1 + activationRowBytes, a3 = a2 + activationRowBytes;
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
        for (int i = 0; i < blocks; i++, w += TDecoder.BlockBytes, a0 += Q8_0Layout.BlockBytes, a1 += Q8_0Layout.BlockBytes, a2 += Q8_0Layout.BlockBytes, a3 += Q8_0Layout.BlockBytes)
        {
            Vector256<sbyte> q = TDecoder.Levels(w);
            Vector256<byte> magnitude = Avx2.Abs(q);
            float d = Fp16.Table[*(ushort*)w];
            acc0 = Accumulate(acc0, magnitude, q, d, a0);
            acc1 = Accumulate(acc1, magnitude, q, d, a1);
            acc2 = Accumulate(acc2, magnitude, q, d, a2);
            acc3 = Accumulate(acc3, magnitude, q, d, a3);
        }
        y[0] = KQuantVector.HorizontalSum(acc0);
        y[outputStride] = KQuantVector.HorizontalSum(acc1);
        y[2 * outputStride] = KQuantVector.HorizontalSum(acc2);
        y[3 * outputStride] = KQuantVector.HorizontalSum(acc3);
    }

    /// <summary>acc + d_w·d_x·Σ q·x over one block, with q = sign·magnitude.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Accumulate(Vector256<float> acc, Vector256<byte> magnitude, Vector256<sbyte> q, float d, byte* a)
    {
        Vector256<sbyte> x = Avx2.Sign(Avx.LoadVector256((sbyte*)(a + Q8_0Layout.QuantsOffset)), q);
        Vector256<int> sums = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(magnitude, x), Vector256<short>.One);
        return Fma.MultiplyAdd(Vector256.Create(d * Fp16.Table[*(ushort*)a]), Avx.ConvertToVector256Single(sums), acc);
    }
}
