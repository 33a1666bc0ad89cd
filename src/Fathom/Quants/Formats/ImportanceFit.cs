namespace Fathom.Quants.Formats;

/// <summary>
/// The per-value weights ggml's IQ quantizers fit with: importance × sqrt(σ² + x²) when an importance (imatrix
/// column) is given, with σ² twice the super-block's mean square, else x².
/// </summary>
internal static class ImportanceFit
{
    /// <summary>Twice the mean square of <paramref name="superBlock"/>.</summary>
    public static float Sigma2(ReadOnlySpan<float> superBlock)
    {
        float sum = 0;
        foreach (float v in superBlock) sum += v * v;
        return sum * 2f / superBlock.Length;
    }

    public static void Weights(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, float sigma2, Span<float> weights)
    {
        if (importance.IsEmpty)
            for (int j = 0; j < x.Length; j++) weights[j] = x[j] * x[j];
        else
            for (int j = 0; j < x.Length; j++) weights[j] = importance[j] * MathF.Sqrt(sigma2 + x[j] * x[j]);
    }
}
