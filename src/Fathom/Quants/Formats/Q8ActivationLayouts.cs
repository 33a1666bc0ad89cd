using System.Runtime.CompilerServices;

namespace Fathom.Quants.Formats;

/// <summary>
/// Byte layout of ggml's <c>block_q8_K</c> as the dot kernels of the IQ3/IQ4/ternary formats read it:
/// <c>float d; int8 qs[256]; int16 bsums[16]</c> (bsums[i] is the sum of qs[16i..16i+15]).
/// </summary>
internal static class Q8KLayout
{
    public const int BlockSize = 256;
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

/// <summary>Byte layout of ggml's <c>block_q8_0</c>: <c>f16 d; int8 qs[32]</c>.</summary>
internal static class Q8_0Layout
{
    public const int BlockSize = 32;
    public const int BlockBytes = 34;
    public const int ScaleOffset = 0;
    public const int QuantsOffset = 2;
}
