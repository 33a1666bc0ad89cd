namespace Fathom.Runtime;

/// <summary>
/// Thrown when a forward pass would write past the end of a session's KV cache. In a batch of sessions,
/// <see cref="BatchIndex"/> says which session is full (and nothing of the batch was written).
/// </summary>
public sealed class ContextFullException(int position, int tokens, int capacity, int? batchIndex = null)
    : InvalidOperationException((batchIndex is { } i ? $"Session {i} of the batch: the" : "The")
        + $" context is full: {position} tokens are cached and {tokens} more do not fit in a context of {capacity}.")
{
    public int Position { get; } = position;
    public int Tokens { get; } = tokens;
    public int Capacity { get; } = capacity;

    /// <summary>The full session's index in a batch; null for a single-session pass.</summary>
    public int? BatchIndex { get; } = batchIndex;
}
