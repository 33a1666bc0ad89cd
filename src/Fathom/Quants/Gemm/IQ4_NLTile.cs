using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats;

namespace Fathom.Quants.Gemm;

/// <summary>
/// IQ4_NL × Q8_0 for one weight row and four tokens at a time (AVX2): each 32-value block's nibbles are looked up in
/// the non-linear level table (vpshufb) once, then multiplied with the four tokens' int8 values (the sign trick of
/// <see cref="Q8_0Tile"/>). llama.cpp's fallback type for rows that are not whole 256-blocks, such as DeepSeek-V2-Lite's
/// expert down projections.
/// </summary>
internal sealed unsafe class IQ4_NLTile(WeightFormat format) : TileKernel(format)
{
    private const int BlockBytes = 18;

    public override int TokenTile => 4;

    public override void Multiply(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes,
        int tokens, int n, float* output, long outputStride)
    {
        int blocks = n / Q8_0Layout.BlockSize;
        int t = 0;
        for (; t + 4 <= tokens; t += 4)
        {
            byte* a = activations + t * activationRowBytes;
            float* y = output + t * outputStride;
            for (int r = 0; r < rows; r++)
                RowTimesFour(weights + r * weightRowBytes, a, activationRowBytes, blocks, y + r, outputStride);
        }
        for (; t < tokens; t++)
            for (int r = 0; r < rows; r++)
                output[t * outputStride + r] = DotOne(weights + r * weightRowBytes, weightRowBytes, activations + t * activationRowBytes, activationRowBytes, n);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void RowTimesFour(byte* w, byte* a0, long activationRowBytes, int blocks, float* y, long outputStride)
    {
        byte* a1 = a0 + activationRowBytes, a2 = a1 + activationRowBytes, a3 = a2 + activationRowBytes;
        Vector256<sbyte> table = Vector256.Create(Iq4NonLinear.LevelTable, Iq4NonLinear.LevelTable);
        Vector256<uint> nibbleShift = Vector256.Create(0u, 0, 0, 0, 4, 4, 4, 4);
        Vector256<byte> lowNibble = Vector256.Create((byte)0x0F);
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
        for (int i = 0; i < blocks; i++, w += BlockBytes, a0 += Q8_0Layout.BlockBytes, a1 += Q8_0Layout.BlockBytes, a2 += Q8_0Layout.BlockBytes, a3 += Q8_0Layout.BlockBytes)
        {
            // Value order: the low lane takes the low nibbles (values 0–15), the high lane the high ones (16–31).
            Vector256<byte> packed = Avx2.BroadcastVector128ToVector256(w + 2);
            Vector256<byte> index = Avx2.ShiftRightLogicalVariable(packed.AsUInt32(), nibbleShift).AsByte() & lowNibble;
            Vector256<sbyte> q = Avx2.Shuffle(table, index.AsSByte());
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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Accumulate(Vector256<float> acc, Vector256<byte> magnitude, Vector256<sbyte> q, float d, byte* a)
    {
        Vector256<sbyte> x = Avx2.Sign(Avx.LoadVector256((sbyte*)(a + Q8_0Layout.QuantsOffset)), q);
        Vector256<int> sums = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(magnitude, x), Vector256<short>.One);
        return Fma.MultiplyAdd(Vector256.Create(d * Fp16.Table[*(ushort*)a]), Avx.ConvertToVector256Single(sums), acc);
    }
}
