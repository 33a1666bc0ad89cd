namespace Fathom.Quants.Gemm;

/// <summary>
/// The shared loop of the tile kernels that take one weight row and four tokens at a time: each group of four
/// tokens passes every row of the tile through the type's <see cref="RowTimesFour"/>; the last tokens (fewer than
/// four) go through the type's own single-row dot.
/// </summary>
internal abstract unsafe class FourTokenTile(WeightFormat format) : TileKernel(format)
{
    public sealed override int TokenTile => 4;

    public sealed override void Multiply(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes,
        int tokens, int n, float* output, long outputStride)
    {
        int t = 0;
        for (; t + 4 <= tokens; t += 4)
        {
            byte* a = activations + t * activationRowBytes;
            float* y = output + t * outputStride;
            for (int r = 0; r < rows; r++)
                RowTimesFour(weights + r * weightRowBytes, a, activationRowBytes, n, y + r, outputStride);
        }
        for (; t < tokens; t++)
            for (int r = 0; r < rows; r++)
                output[t * outputStride + r] = DotOne(weights + r * weightRowBytes, weightRowBytes, activations + t * activationRowBytes, activationRowBytes, n);
    }

    /// <summary>
    /// The row <paramref name="w"/> of <paramref name="n"/> values dotted with four consecutive tokens' activation
    /// rows (the first at <paramref name="a0"/>), written to <c>y[0]</c>, <c>y[outputStride]</c>, … <c>y[3·outputStride]</c>.
    /// </summary>
    protected abstract void RowTimesFour(byte* w, byte* a0, long activationRowBytes, int n, float* y, long outputStride);
}
