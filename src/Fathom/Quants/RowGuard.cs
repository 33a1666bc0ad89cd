namespace Fathom.Quants;

/// <summary>Argument checks shared by the formats: rows are whole blocks and buffers hold them.</summary>
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

    /// <summary>Checks a dot product's operands and returns the number of weight blocks.</summary>
    public static int Dot(WeightFormat format, int weightBytes, int activationBytes, int n)
    {
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), n, "Element count must not be negative.");
        int blocks = Blocks(format.Layout, n, weightBytes);
        Blocks(GgmlTypes.Layout(format.DotActivationType), n, activationBytes);
        return blocks;
    }
}
