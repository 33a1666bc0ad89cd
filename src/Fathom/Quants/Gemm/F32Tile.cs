using Fathom.Quants.Formats;

namespace Fathom.Quants.Gemm;

/// <summary>
/// F32 weights × F32 activations (AVX2 + FMA): the type's own AVX2 dot on raw pointers for every (row, token), tokens
/// innermost so the weight row stays in L1. Bit-identical to <see cref="F32Format"/>'s dot by construction. What it
/// saves over <see cref="DotLoopTile"/> is the per-call cost of the checked <see cref="WeightFormat.Dot"/> (spans,
/// argument checks, path dispatch), which dominates short rows: DeepSeek-V2's absorbed MLA multiplies each head's
/// 128-value queries by an F32 matrix of 512 such rows, 16 heads per layer.
/// </summary>
internal sealed unsafe class F32Tile(WeightFormat format) : TileKernel(format)
{
    public override int TokenTile => 1;

    public override void Multiply(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes,
        int tokens, int n, float* output, long outputStride)
    {
        for (int r = 0; r < rows; r++)
        {
            float* w = (float*)(weights + r * weightRowBytes);
            for (int t = 0; t < tokens; t++)
                output[t * outputStride + r] = F32Format.DotAvx2(w, (float*)(activations + t * activationRowBytes), n);
        }
    }
}
