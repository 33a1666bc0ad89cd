namespace Fathom.Evaluation;

/// <summary>Where an evaluation stands after one chunk: llama-perplexity's <c>[i]ppl</c> running estimate.</summary>
public readonly record struct PerplexityProgress(int Chunk, int ChunkCount, double RunningPerplexity, TimeSpan Elapsed);

/// <summary>
/// The outcome of <see cref="Perplexity.Evaluate(Models.Model, IReadOnlyList{int}, int?, PerplexityOptions, Action{PerplexityProgress}?)"/>:
/// <c>PPL = exp(mean NLL)</c> over every scored token, with the standard error llama.cpp reports.
/// </summary>
public sealed record PerplexityResult
{
    public required int ContextSize { get; init; }
    public required int ChunkCount { get; init; }
    /// <summary>Tokens scored: <c>ChunkCount × (ContextSize − 1 − ContextSize/2)</c>.</summary>
    public required int ScoredTokens { get; init; }
    public required double MeanNegativeLogLikelihood { get; init; }
    public required double Perplexity { get; init; }
    /// <summary>Standard error of the perplexity: <c>PPL × stderr(NLL)</c> (first-order propagation through exp).</summary>
    public required double PerplexityError { get; init; }
    /// <summary>The running estimate after each chunk.</summary>
    public required IReadOnlyList<double> ChunkPerplexities { get; init; }
    /// <summary>Present when a base file was given.</summary>
    public KlDivergenceSummary? KlDivergence { get; init; }
    public required TimeSpan Elapsed { get; init; }
}
