using System.Numerics.Tensors;

namespace Fathom.Evaluation;

/// <summary>
/// Log-probabilities from logits as llama.cpp's perplexity tool computes them: exponentials in float (vectorized
/// here), shifted by the maximum so none overflows, summed in double, because a large vocabulary adds many small
/// terms and a float sum would lose the tail.
/// </summary>
public static class LogSoftmax
{
    /// <summary><c>log(Σ exp(logits))</c>; <paramref name="scratch"/> (at least as long as the logits) holds the exponentials.</summary>
    public static double LogSumExp(ReadOnlySpan<float> logits, Span<float> scratch)
    {
        if (scratch.Length < logits.Length) throw new ArgumentException("scratch is shorter than the logits", nameof(scratch));
        Span<float> exps = scratch[..logits.Length];
        float max = TensorPrimitives.Max(logits);
        TensorPrimitives.Subtract(logits, max, exps);
        TensorPrimitives.Exp(exps, exps);
        return max + Math.Log(SumInDouble(exps));
    }

    /// <summary>Σ values in double, four independent accumulators so the adds overlap.</summary>
    public static double SumInDouble(ReadOnlySpan<float> values)
    {
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int i = 0;
        for (; i + 4 <= values.Length; i += 4)
        {
            s0 += values[i];
            s1 += values[i + 1];
            s2 += values[i + 2];
            s3 += values[i + 3];
        }
        for (; i < values.Length; i++) s0 += values[i];
        return (s0 + s1) + (s2 + s3);
    }

    /// <summary>Writes <c>logits[i] − log Σ exp(logits)</c> into <paramref name="destination"/> and returns the log-sum-exp.</summary>
    public static double Compute(ReadOnlySpan<float> logits, Span<float> destination)
    {
        double logSum = LogSumExp(logits, destination);
        for (int i = 0; i < logits.Length; i++) destination[i] = (float)(logits[i] - logSum);
        return logSum;
    }
}
