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

/// <summary>Argument checks and small conversions shared by the IQ3/IQ4/ternary formats.</summary>
internal static class FormatGuards
{
    /// <summary>Checks a dot product's row lengths; returns the number of blocks.</summary>
    public static int DotBlocks(GgmlTypeLayout weight, GgmlType activationType, ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n)
    {
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), n, "Element count must not be negative.");
        long weightBytes = weight.RowBytes(n);
        long activationBytes = GgmlTypes.Layout(activationType).RowBytes(n);
        if (weights.Length < weightBytes)
            throw new ArgumentException($"{weight.Name} row of {n} elements needs {weightBytes} bytes, got {weights.Length}.", nameof(weights));
        if (activations.Length < activationBytes)
            throw new ArgumentException($"{activationType} row of {n} elements needs {activationBytes} bytes, got {activations.Length}.", nameof(activations));
        return n / weight.BlockSize;
    }

    /// <summary>Checks a dequantization's lengths; returns the number of blocks.</summary>
    public static int DequantizeBlocks(GgmlTypeLayout layout, ReadOnlySpan<byte> blocks, Span<float> values)
    {
        long bytes = layout.RowBytes(values.Length);
        if (blocks.Length < bytes)
            throw new ArgumentException($"{values.Length} {layout.Name} values need {bytes} bytes, got {blocks.Length}.", nameof(blocks));
        return values.Length / layout.BlockSize;
    }

    /// <summary>Checks a quantization's lengths; returns the number of blocks.</summary>
    public static int QuantizeBlocks(GgmlTypeLayout layout, ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        long bytes = layout.RowBytes(values.Length);
        if (blocks.Length < bytes)
            throw new ArgumentException($"{values.Length} {layout.Name} values need {bytes} bytes, got {blocks.Length}.", nameof(blocks));
        if (!importance.IsEmpty && importance.Length != values.Length)
            throw new ArgumentException($"Importance must be empty or hold one weight per value ({values.Length}), got {importance.Length}.", nameof(importance));
        return values.Length / layout.BlockSize;
    }

    /// <summary>The kernel path to run: the requested one, or the widest narrower one this CPU supports.</summary>
    public static KernelPath Resolve(KernelPath requested)
    {
        if (requested >= KernelPath.Avx2 && KernelPaths.IsSupported(KernelPath.Avx2)) return KernelPath.Avx2;
        if (requested >= KernelPath.Portable && KernelPaths.IsSupported(KernelPath.Portable)) return KernelPath.Portable;
        return KernelPath.Scalar;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Half(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort ToHalf(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>ggml's <c>nearest_int</c>: round half to even.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int NearestInt(float value) => (int)MathF.Round(value);
}
