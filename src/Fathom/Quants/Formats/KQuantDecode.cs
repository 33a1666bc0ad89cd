using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// AVX2 stores of decoded K-quant levels. Each writes step·level − offset (or step·level) with a separate multiply
/// and subtract, exactly the float operations of the scalar decoders, so results stay bit-identical with ggml.
/// </summary>
internal static unsafe class KQuantDecode
{
    public static bool IsAccelerated => Avx2.IsSupported;

    /// <summary>Sixteen unsigned levels → step·q − offset.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreAffine16(Vector128<byte> levels, float step, float offset, float* y)
    {
        Vector256<float> s = Vector256.Create(step), o = Vector256.Create(offset);
        Vector256<float> low = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(levels));
        Vector256<float> high = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(levels, 8)));
        Avx.Store(y, Avx.Subtract(Avx.Multiply(s, low), o));
        Avx.Store(y + 8, Avx.Subtract(Avx.Multiply(s, high), o));
    }

    /// <summary>Thirty-two unsigned levels sharing one step and offset.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreAffine32(Vector256<byte> levels, float step, float offset, float* y)
    {
        StoreAffine16(levels.GetLower(), step, offset, y);
        StoreAffine16(levels.GetUpper(), step, offset, y + 16);
    }

    /// <summary>Sixteen signed levels → step·q.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreScaled16(Vector128<sbyte> levels, float step, float* y)
    {
        Vector256<float> s = Vector256.Create(step);
        Vector256<float> low = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(levels));
        Vector256<float> high = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(levels, 8)));
        Avx.Store(y, Avx.Multiply(s, low));
        Avx.Store(y + 8, Avx.Multiply(s, high));
    }
}
