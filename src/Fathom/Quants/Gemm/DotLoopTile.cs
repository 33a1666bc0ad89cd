namespace Fathom.Quants.Gemm;

/// <summary>
/// The generic tile: one <see cref="WeightFormat.Dot"/> per (row, token), four rows at a time with tokens innermost so
/// the weight rows stay in cache. Every type works through it; it is also the reference the specialised kernels are measured against.
/// </summary>
public sealed unsafe class DotLoopTile(WeightFormat format) : TileKernel(format)
{
    public override int TokenTile => 1;

    public override void Multiply(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes,
        int tokens, int n, float* output, long outputStride)
    {
        // Four rows (in cache) at a time, every token through them (WeightFormat.DotRows: the values of DotOne).
        for (int r = 0; r < rows; r += 4)
        {
            int count = Math.Min(4, rows - r);
            for (int t = 0; t < tokens; t++)
                Format.DotRows(weights + r * weightRowBytes, weightRowBytes, count, activations + t * activationRowBytes, activationRowBytes, n, output + t * outputStride + r);
        }
    }
}
