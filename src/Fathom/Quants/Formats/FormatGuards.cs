using System.Runtime.CompilerServices;

namespace Fathom.Quants.Formats;

/// <summary>Argument checks shared by the IQ3/IQ4/ternary formats.</summary>
internal static class FormatGuards
{
    /// <summary>Checks a dot product's row lengths; returns the number of blocks. Cheap enough for every row call.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int DotBlocks(GgmlType type, int blockSize, int blockBytes, int activationBlockBytes,
        ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n)
    {
        int nb = n / blockSize;
        if (n < 0 || nb * blockSize != n || weights.Length < (long)nb * blockBytes || activations.Length < (long)nb * activationBlockBytes)
            ThrowBadDot(type, weights.Length, activations.Length, n);
        return nb;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowBadDot(GgmlType type, int weightBytes, int activationBytes, int n)
    {
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), n, "Element count must not be negative.");
        GgmlTypeLayout weight = GgmlTypes.Layout(type);
        GgmlTypeLayout activation = GgmlTypes.Layout(TypeTraits.For(type).DotActivationType);
        long needWeights = weight.RowBytes(n), needActivations = activation.RowBytes(n);
        if (weightBytes < needWeights)
            throw new ArgumentException($"{weight.Name} row of {n} elements needs {needWeights} bytes, got {weightBytes}.", "weights");
        throw new ArgumentException($"{activation.Name} row of {n} elements needs {needActivations} bytes, got {activationBytes}.", "activations");
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
}
