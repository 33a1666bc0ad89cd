namespace Fathom.Quants.Formats.LowBitIq;

/// <summary>
/// Byte layout of ggml's Q8_K activation block as the IQ kernels read it: <c>float d; int8 qs[256]; int16 bsums[16]</c>.
/// Values in <c>qs</c> lie in [-127, 127] (ggml quantizes with -127/max), which the sign-flipping kernels rely on.
/// </summary>
internal static class Q8KLayout
{
    public const int BlockSize = 256;
    public const int BlockBytes = 292;
    public const int ScaleOffset = 0;
    public const int QuantsOffset = 4;
    /// <summary>Sums of each 16 consecutive quants, as int16.</summary>
    public const int BlockSumsOffset = 260;
}
