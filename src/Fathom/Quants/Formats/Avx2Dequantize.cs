using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// AVX2 building blocks for dequantization, producing exactly the floats of ggml's scalar to_float: the same single
/// float multiplications in the same order, with a sign applied as an exact negation.
/// </summary>
internal static class Avx2Dequantize
{
    public static bool IsSupported => Avx2.IsSupported;

    private static readonly Vector256<int> SignBits = Vector256.Create(1, 2, 4, 8, 16, 32, 64, 128);

    /// <summary>Writes 32 floats (c − 1)·d for the 2-bit codes c of <paramref name="codes"/>, in order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void OffsetCodes(Vector256<byte> codes, float d, float* y)
    {
        Vector256<float> scale = Vector256.Create(d);
        Eight(codes.GetLower(), scale, y);
        Eight(Sse2.ShiftRightLogical128BitLane(codes.GetLower(), 8), scale, y + 8);
        Eight(codes.GetUpper(), scale, y + 16);
        Eight(Sse2.ShiftRightLogical128BitLane(codes.GetUpper(), 8), scale, y + 24);

        static void Eight(Vector128<byte> c, Vector256<float> scale, float* y) =>
            Avx.Store(y, (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(c)) - Vector256<float>.One) * scale);
    }

    /// <summary>Writes 8 floats db·magnitude, negated where <paramref name="signs"/> has the value's bit set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void SignedMagnitudes(ulong magnitudes, int signs, float db, float* y)
    {
        Vector256<float> m = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Vector128.CreateScalar(magnitudes).AsByte()));
        Vector256<int> negative = Avx2.CompareEqual(Vector256.Create(signs) & SignBits, SignBits);
        Avx.Store(y, (Vector256.Create(db) * m) ^ (negative << 31).AsSingle());
    }
}
