namespace Fathom.Evaluation;

/// <summary>
/// Log-probabilities from logits, in double as llama.cpp's perplexity tool does: a large vocabulary sums many
/// small exponentials, and float would lose the tail.
/// </summary>
public static class LogSoftmax
{
    /// <summary><c>log(Σ exp(logits))</c>, shifted by the maximum so no exponential overflows.</summary>
    public static double LogSumExp(ReadOnlySpan<float> logits)
    {
        float max = System.Numerics.Tensors.TensorPrimitives.Max(logits);
        double sum = 0;
        foreach (float v in logits) sum += Math.Exp((double)v - max);
        return max + Math.Log(sum);
    }

    /// <summary>Writes <c>logits[i] − log Σ exp(logits)</c> into <paramref name="destination"/> and returns the log-sum-exp.</summary>
    public static double Compute(ReadOnlySpan<float> logits, Span<float> destination)
    {
        if (destination.Length < logits.Length) throw new ArgumentException("destination is shorter than the logits", nameof(destination));
        double logSum = LogSumExp(logits);
        for (int i = 0; i < logits.Length; i++) destination[i] = (float)(logits[i] - logSum);
        return logSum;
    }
}
