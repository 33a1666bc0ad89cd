using System.Runtime.CompilerServices;

namespace Fathom.Quants.Formats.LowBitIq;

/// <summary>Argument checks and the path table shared by the IQ1/IQ2 dot kernels.</summary>
internal static class IqKernels
{
    /// <summary>For every requested path, the one <see cref="KernelDispatch.Widest"/> picks: computed once so a dot call only indexes.</summary>
    public static KernelPath[] ResolutionTable(IReadOnlyList<KernelPath> implemented)
    {
        KernelPath[] all = Enum.GetValues<KernelPath>();
        var table = new KernelPath[(int)all.Max() + 1];
        foreach (KernelPath requested in all) table[(int)requested] = KernelDispatch.Widest(requested, implemented);
        return table;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static KernelPath Pick(KernelPath[] table, KernelPath requested) =>
        (uint)requested < (uint)table.Length ? table[(int)requested] : table[^1];

    /// <summary>Validates a dot product's operands and returns the number of 256-element blocks.</summary>
    public static int CheckDot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, int weightBlockBytes, string typeName)
    {
        if (n < 0 || n % Q8KLayout.BlockSize != 0)
            throw new ArgumentException($"{typeName} dot length must be a non-negative multiple of {Q8KLayout.BlockSize}, got {n}.", nameof(n));
        int blocks = n / Q8KLayout.BlockSize;
        if ((long)blocks * weightBlockBytes > weights.Length)
            throw new ArgumentException($"{typeName} weights hold {weights.Length} bytes, {n} elements need {(long)blocks * weightBlockBytes}.", nameof(weights));
        if ((long)blocks * Q8KLayout.BlockBytes > activations.Length)
            throw new ArgumentException($"Q8_K activations hold {activations.Length} bytes, {n} elements need {(long)blocks * Q8KLayout.BlockBytes}.", nameof(activations));
        return blocks;
    }

    /// <summary>Validates a dequantization and returns the number of blocks.</summary>
    public static int CheckDequantize(ReadOnlySpan<byte> blocks, Span<float> values, int blockBytes, string typeName)
    {
        if (values.Length % Q8KLayout.BlockSize != 0)
            throw new ArgumentException($"{typeName} rows are whole blocks of 256 values, got {values.Length}.", nameof(values));
        int count = values.Length / Q8KLayout.BlockSize;
        if ((long)count * blockBytes > blocks.Length)
            throw new ArgumentException($"{typeName}: {values.Length} values need {(long)count * blockBytes} bytes, got {blocks.Length}.", nameof(blocks));
        return count;
    }

    /// <summary>Validates a quantization and returns the number of blocks.</summary>
    public static int CheckQuantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance, int blockBytes, string typeName)
    {
        if (values.Length % Q8KLayout.BlockSize != 0)
            throw new ArgumentException($"{typeName} rows are whole blocks of 256 values, got {values.Length}.", nameof(values));
        if (!importance.IsEmpty && importance.Length != values.Length)
            throw new ArgumentException($"{typeName}: importance must hold one weight per value ({values.Length}), got {importance.Length}.", nameof(importance));
        int count = values.Length / Q8KLayout.BlockSize;
        if ((long)count * blockBytes > blocks.Length)
            throw new ArgumentException($"{typeName}: {values.Length} values need {(long)count * blockBytes} bytes, got {blocks.Length}.", nameof(blocks));
        return count;
    }
}
