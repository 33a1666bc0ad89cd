namespace Fathom.Quants.Gemm;

/// <summary>
/// A matrix-product kernel for many tokens at once: every row of a block of weight rows times every row of a block
/// of quantized activation rows (each in the weight type's <see cref="WeightFormat.DotActivationType"/>). Kernels
/// for a type unpack each weight block once and reuse it across several tokens held in registers, which a loop of
/// <see cref="WeightFormat.Dot"/> calls (one row × one token) cannot. <see cref="TileKernels.For"/> picks one.
/// </summary>
public abstract unsafe class TileKernel
{
    protected TileKernel(WeightFormat format) => Format = format;

    /// <summary>The weight type this kernel multiplies.</summary>
    public WeightFormat Format { get; }

    /// <summary>
    /// Tokens one register tile covers; callers that split work by tokens use multiples of it so that only the last
    /// block has a remainder (which kernels finish one token at a time).
    /// </summary>
    public abstract int TokenTile { get; }

    /// <summary>
    /// Columns of a row the kernel works on at a time (<paramref name="n"/> unless it splits long rows into passes):
    /// callers size tiles by this many columns' worth of weights and activations.
    /// </summary>
    public virtual int ColumnsPerPass(int n) => n;

    /// <summary>
    /// output[t·<paramref name="outputStride"/> + r] = row r of the weights · activation row t, for r &lt; rows and
    /// t &lt; tokens, each row holding <paramref name="n"/> elements (a whole number of blocks). Unchecked: the hot
    /// path; <see cref="Multiply(ReadOnlySpan{byte}, int, ReadOnlySpan{byte}, int, int, Span{float})"/> checks.
    /// </summary>
    public abstract void Multiply(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes,
        int tokens, int n, float* output, long outputStride);

    /// <summary>
    /// The checked form: <paramref name="weights"/> holds <paramref name="rows"/> packed rows, <paramref name="activations"/>
    /// <paramref name="tokens"/> packed rows, and <paramref name="output"/> receives tokens × rows values, token-major.
    /// </summary>
    public void Multiply(ReadOnlySpan<byte> weights, int rows, ReadOnlySpan<byte> activations, int tokens, int n, Span<float> output)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        GgmlTypeLayout weight = Format.Layout, activation = GgmlTypes.Layout(Format.DotActivationType);
        int blocks = RowGuard.Blocks(weight, n, int.MaxValue);
        long weightRowBytes = (long)blocks * weight.BytesPerBlock;
        long activationRowBytes = activation.RowBytes(n);
        if (weights.Length < checked(weightRowBytes * rows))
            throw new ArgumentException($"{weight.Name}: {rows} rows of {n} need {weightRowBytes * rows} bytes, got {weights.Length}.", nameof(weights));
        if (activations.Length < checked(activationRowBytes * tokens))
            throw new ArgumentException($"{activation.Name}: {tokens} rows of {n} need {activationRowBytes * tokens} bytes, got {activations.Length}.", nameof(activations));
        if (output.Length < checked((long)rows * tokens))
            throw new ArgumentException($"output holds {output.Length} values, {tokens}×{rows} needed.", nameof(output));
        if (rows == 0 || tokens == 0) return;
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        fixed (float* y = output)
            Multiply(w, weightRowBytes, rows, a, activationRowBytes, tokens, n, y, rows);
    }

    /// <summary>One weight row times one token through the type's own dot product: what tiles do with the leftover tokens.</summary>
    protected float DotOne(byte* weightRow, long weightRowBytes, byte* activationRow, long activationRowBytes, int n) =>
        Format.Dot(new ReadOnlySpan<byte>(weightRow, (int)weightRowBytes), new ReadOnlySpan<byte>(activationRow, (int)activationRowBytes), n);

    public override string ToString() => $"{GetType().Name} ({Format}, {TokenTile} tokens)";
}
