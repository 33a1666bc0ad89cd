namespace Fathom.Quants.Gemm;

/// <summary>
/// The generic tile: one <see cref="WeightFormat.Dot"/> per (row, token), tokens innermost so the weight row stays in
/// cache. Every type works through it; it is also the reference the specialised kernels are measured against.
/// </summary>
public sealed unsafe class DotLoopTile(WeightFormat format) : TileKernel(format)
{
    public override int TokenTile => 1;

    public override void Multiply(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes,
        int tokens, int n, float* output, long outputStride)
    {
        for (int r = 0; r < rows; r++)
        {
            byte* w = weights + r * weightRowBytes;
            for (int t = 0; t < tokens; t++)
                output[t * outputStride + r] = DotOne(w, weightRowBytes, activations + t * activationRowBytes, activationRowBytes, n);
        }
    }
}
