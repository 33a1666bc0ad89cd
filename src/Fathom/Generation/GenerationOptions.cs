namespace Fathom.Generation;

/// <summary>What one generation call may do.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate.</summary>
    public int MaxTokens { get; init; } = 1024;
    public SamplingOptions Sampling { get; init; } = SamplingOptions.DeepSeekR1;
    /// <summary>Generation ends before the first occurrence of any of these strings.</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];
    /// <summary>The prompt already opened <c>&lt;think&gt;</c>, so output starts as reasoning.</summary>
    public bool StartsInReasoning { get; init; }
    /// <summary>Split reasoning from the answer; when false all text is answer.</summary>
    public bool SplitReasoning { get; init; } = true;
    /// <summary>Keep a copy of the logits of the last prompt position in <see cref="GenerationResult.PromptLogits"/>.</summary>
    public bool KeepPromptLogits { get; init; }
    /// <summary>
    /// Most prompt tokens evaluated in one forward pass (llama.cpp's batch size): a longer prompt goes in batches of this
    /// many, so its scratch memory stays what a GPU placement reserves for (<see cref="Models.Placement.DeviceMemoryReserve.PromptBatch"/>).
    /// </summary>
    public int PromptBatchSize { get; init; } = Models.Placement.DeviceMemoryReserve.PromptBatch;
}

/// <summary>Why generation ended.</summary>
public enum FinishReason
{
    /// <summary>The model produced an end-of-generation token.</summary>
    EndOfGeneration,
    /// <summary>A stop string was produced.</summary>
    Stop,
    /// <summary><see cref="GenerationOptions.MaxTokens"/> was reached.</summary>
    Length,
    /// <summary>The session's context is full.</summary>
    ContextFull,
    /// <summary>The caller cancelled.</summary>
    Cancelled,
}

/// <summary>A piece of streamed output.</summary>
public readonly record struct GenerationChunk(OutputChannel Channel, string Text);

/// <summary>Everything about one finished generation.</summary>
public sealed record GenerationResult
{
    public required IReadOnlyList<int> PromptTokens { get; init; }
    public required IReadOnlyList<int> OutputTokens { get; init; }
    public required string Text { get; init; }
    public required string Reasoning { get; init; }
    public required FinishReason FinishReason { get; init; }
    /// <summary>Prompt tokens that were actually evaluated (the rest were already in the session's cache).</summary>
    public required int PromptTokensEvaluated { get; init; }
    public required TimeSpan PromptTime { get; init; }
    public required TimeSpan GenerationTime { get; init; }
    public required ulong Seed { get; init; }
    /// <summary>Logits of the last prompt position, when <see cref="GenerationOptions.KeepPromptLogits"/> asked for them.</summary>
    public float[]? PromptLogits { get; init; }

    public double PromptTokensPerSecond => PromptTokensEvaluated / Math.Max(PromptTime.TotalSeconds, 1e-9);
    public double GenerationTokensPerSecond => OutputTokens.Count / Math.Max(GenerationTime.TotalSeconds, 1e-9);
}
