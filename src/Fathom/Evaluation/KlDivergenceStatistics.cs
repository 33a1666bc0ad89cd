using System.Numerics.Tensors;

namespace Fathom.Evaluation;

/// <summary>
/// How far a model's next-token distributions are from a base model's over the same scored positions, with the
/// statistics llama-perplexity's <c>--kl-divergence</c> reports. Percentiles interpolate linearly between the
/// sorted per-token values.
/// </summary>
public sealed record KlDivergenceSummary
{
    public required int Tokens { get; init; }
    /// <summary>Perplexity of the base model on the same scored tokens, from its saved log-probabilities.</summary>
    public required double BasePerplexity { get; init; }
    public required double BasePerplexityError { get; init; }
    /// <summary>Mean of <c>KL(base ‖ model) = Σ p_base · (ln p_base − ln p_model)</c> per token, in nats.</summary>
    public required double Mean { get; init; }
    public required double MeanError { get; init; }
    public required double Maximum { get; init; }
    public required double Percentile99_9 { get; init; }
    public required double Percentile99 { get; init; }
    public required double Percentile90 { get; init; }
    public required double Median { get; init; }
    public required double Percentile10 { get; init; }
    public required double Percentile1 { get; init; }
    public required double Minimum { get; init; }
    /// <summary>Percentage of positions where both models' most likely token is the same ("same top p").</summary>
    public required double SameTopPercent { get; init; }
    public required double SameTopPercentError { get; init; }
    /// <summary>Mean of <c>p_model(actual) − p_base(actual)</c>, in percent.</summary>
    public required double MeanDeltaProbabilityPercent { get; init; }
    public required double MeanDeltaProbabilityPercentError { get; init; }
    /// <summary>Root mean square of the same difference, in percent.</summary>
    public required double RmsDeltaProbabilityPercent { get; init; }
}

/// <summary>Accumulates per-token KL divergence; keeps one float per token (for the percentiles), never a row.</summary>
public sealed class KlDivergenceStatistics
{
    private readonly List<float> _divergences = [];
    private double _sum, _sumSquares, _baseNll, _baseNllSquares, _delta, _deltaSquares;
    private int _sameTop;
    private float[] _probabilities = [], _terms = [];

    public int Count => _divergences.Count;

    /// <summary>
    /// Scores one position: <paramref name="baseLogProbabilities"/> and <paramref name="logProbabilities"/> are
    /// whole-vocabulary log-softmax rows, <paramref name="actual"/> the token that came next.
    /// </summary>
    public void Add(ReadOnlySpan<float> baseLogProbabilities, ReadOnlySpan<float> logProbabilities, int actual)
    {
        int n = logProbabilities.Length;
        if (baseLogProbabilities.Length != n) throw new ArgumentException("the rows differ in length");
        if ((uint)actual >= (uint)n) throw new ArgumentOutOfRangeException(nameof(actual));
        if (_probabilities.Length != n)
        {
            _probabilities = new float[n];
            _terms = new float[n];
        }
        // Σ p_base · (ln p_base − ln p): the exponentials and products in float (vectorized), the sum in double.
        TensorPrimitives.Exp(baseLogProbabilities, _probabilities);
        TensorPrimitives.Subtract(baseLogProbabilities, logProbabilities, _terms);
        TensorPrimitives.Multiply(_probabilities, _terms, _terms);
        double kl = LogSoftmax.SumInDouble(_terms);
        int baseTop = TensorPrimitives.IndexOfMax(baseLogProbabilities), top = TensorPrimitives.IndexOfMax(logProbabilities);
        // Rounding can leave a hair below zero when the rows are (nearly) equal; the divergence itself never is.
        kl = Math.Max(kl, 0);
        _divergences.Add((float)kl);
        _sum += kl;
        _sumSquares += kl * kl;
        double baseNll = -(double)baseLogProbabilities[actual];
        _baseNll += baseNll;
        _baseNllSquares += baseNll * baseNll;
        double delta = Math.Exp(logProbabilities[actual]) - Math.Exp(baseLogProbabilities[actual]);
        _delta += delta;
        _deltaSquares += delta * delta;
        if (top == baseTop) _sameTop++;
    }

    public KlDivergenceSummary Summarize()
    {
        int n = Count;
        if (n == 0) throw new InvalidOperationException("no positions were compared");
        float[] sorted = [.. _divergences];
        Array.Sort(sorted);
        double mean = _sum / n;
        double baseMean = _baseNll / n, basePpl = Math.Exp(baseMean);
        double deltaMean = _delta / n;
        double same = (double)_sameTop / n;
        return new KlDivergenceSummary
        {
            Tokens = n,
            BasePerplexity = basePpl,
            BasePerplexityError = basePpl * StandardError(baseMean, _baseNllSquares / n, n),
            Mean = mean,
            MeanError = StandardError(mean, _sumSquares / n, n),
            Maximum = sorted[^1],
            Percentile99_9 = Percentile(sorted, 0.999),
            Percentile99 = Percentile(sorted, 0.99),
            Percentile90 = Percentile(sorted, 0.90),
            Median = Percentile(sorted, 0.5),
            Percentile10 = Percentile(sorted, 0.10),
            Percentile1 = Percentile(sorted, 0.01),
            Minimum = sorted[0],
            SameTopPercent = 100 * same,
            SameTopPercentError = n > 1 ? 100 * Math.Sqrt(same * (1 - same) / (n - 1)) : 0,
            MeanDeltaProbabilityPercent = 100 * deltaMean,
            MeanDeltaProbabilityPercentError = 100 * StandardError(deltaMean, _deltaSquares / n, n),
            RmsDeltaProbabilityPercent = 100 * Math.Sqrt(_deltaSquares / n),
        };
    }

    /// <summary>Standard error of a mean from the mean and the mean of squares of <paramref name="n"/> samples.</summary>
    internal static double StandardError(double mean, double meanOfSquares, int n)
    {
        double variance = meanOfSquares - mean * mean;
        return n > 1 && variance > 0 ? Math.Sqrt(variance / (n - 1)) : 0;
    }

    /// <summary>The value at <paramref name="fraction"/> of the sorted values, interpolating between neighbours.</summary>
    internal static double Percentile(ReadOnlySpan<float> sorted, double fraction)
    {
        double at = fraction * (sorted.Length - 1);
        int below = (int)at;
        if (below >= sorted.Length - 1) return sorted[^1];
        double t = at - below;
        return (1 - t) * sorted[below] + t * sorted[below + 1];
    }
}
