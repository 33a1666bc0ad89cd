using System.Runtime.CompilerServices;

namespace Fathom.Quants;

/// <summary>Argument checks shared by every format: rows are whole blocks and buffers hold them.</summary>
internal static class RowGuard
{
    /// <summary>Number of blocks in a row of <paramref name="valueCount"/> values stored in <paramref name="byteCount"/> bytes.</summary>
    public static int Blocks(GgmlTypeLayout layout, int valueCount, int byteCount)
    {
        if (valueCount % layout.BlockSize != 0)
            throw new ArgumentException($"{layout.Name} rows must be a multiple of {layout.BlockSize} values, got {valueCount}.");
        int blocks = valueCount / layout.BlockSize;
        if ((long)blocks * layout.BytesPerBlock > byteCount)
            throw new ArgumentException($"{layout.Name}: {valueCount} values need {(long)blocks * layout.BytesPerBlock} bytes, the buffer holds {byteCount}.");
        return blocks;
    }

    public static void Importance(ReadOnlySpan<float> importance, int valueCount)
    {
        if (!importance.IsEmpty && importance.Length != valueCount)
            throw new ArgumentException($"Importance must be empty or hold one weight per value ({valueCount}), got {importance.Length}.");
    }

    /// <summary>Checks a quantization's operands (<see cref="Importance"/>, then <see cref="Blocks"/>); returns the number of blocks.</summary>
    public static int Quantize(GgmlTypeLayout layout, ReadOnlySpan<float> values, int byteCount, ReadOnlySpan<float> importance)
    {
        Importance(importance, values.Length);
        return Blocks(layout, values.Length, byteCount);
    }

    /// <summary>Checks a dot product's operands and returns the number of weight blocks.</summary>
    public static int Dot(WeightFormat format, int weightBytes, int activationBytes, int n)
    {
        GgmlTypeLayout weight = format.Layout;
        return Dot(format.Type, weight.BlockSize, weight.BytesPerBlock, GgmlTypes.Layout(format.DotActivationType).BytesPerBlock,
            weightBytes, activationBytes, n);
    }

    /// <summary>
    /// Checks a dot product's row lengths (activation blocks hold as many values as weight blocks); returns the
    /// number of blocks. Inlined and branch-light, so cheap enough for every row call; the messages are built out of line.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Dot(GgmlType type, int blockSize, int blockBytes, int activationBlockBytes, int weightBytes, int activationBytes, int n)
    {
        int nb = n / blockSize;
        if (n < 0 || nb * blockSize != n || weightBytes < (long)nb * blockBytes || activationBytes < (long)nb * activationBlockBytes)
            ThrowBadDot(type, weightBytes, activationBytes, n);
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
}
