namespace Fathom.Evaluation;

/// <summary>How <see cref="Perplexity"/> cuts and scores a text.</summary>
public sealed record PerplexityOptions
{
    /// <summary>Tokens per chunk (llama-perplexity's <c>-c</c>); only the second half of each chunk is scored.</summary>
    public int ContextSize { get; init; } = 512;

    /// <summary>Evaluate at most this many chunks; null evaluates every whole chunk of the text.</summary>
    public int? MaxChunks { get; init; }

    /// <summary>
    /// Scored positions go through the model at most this many at a time, so the logits buffer is
    /// <c>BatchSize × vocabulary</c> floats whatever the context.
    /// </summary>
    public int BatchSize { get; init; } = 256;

    /// <summary>Write the scored positions' log-probabilities to this file (<see cref="LogProbabilityFile"/>).</summary>
    public string? SaveLogProbabilitiesPath { get; init; }

    /// <summary>Compare with the log-probabilities in this file (a run of the base model over the same text).</summary>
    public string? KlDivergenceBasePath { get; init; }

    public void Validate()
    {
        if (ContextSize < 4) throw new ArgumentException($"the context must be at least 4 tokens (got {ContextSize})");
        if (MaxChunks is < 1) throw new ArgumentException($"the chunk count must be positive (got {MaxChunks})");
        if (BatchSize < 1) throw new ArgumentException($"the batch size must be positive (got {BatchSize})");
    }
}
