namespace Fathom.Evaluation;

/// <summary>Tokens per second over the timed repetitions of one benchmark test.</summary>
public sealed record ThroughputStatistics(double Median, double Min, double Max, IReadOnlyList<double> Samples)
{
    /// <summary>Median (the mean of the middle two for an even count), minimum and maximum of <paramref name="tokensPerSecond"/>.</summary>
    public static ThroughputStatistics From(IReadOnlyList<double> tokensPerSecond)
    {
        if (tokensPerSecond.Count == 0) throw new ArgumentException("no samples", nameof(tokensPerSecond));
        double[] sorted = [.. tokensPerSecond];
        Array.Sort(sorted);
        int middle = sorted.Length / 2;
        double median = sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
        return new ThroughputStatistics(median, sorted[0], sorted[^1], [.. tokensPerSecond]);
    }

    /// <summary>The rates if every token took <paramref name="timeScale"/> times as long.</summary>
    public ThroughputStatistics Slower(double timeScale) =>
        new(Median / timeScale, Min / timeScale, Max / timeScale, [.. Samples.Select(s => s / timeScale)]);
}
