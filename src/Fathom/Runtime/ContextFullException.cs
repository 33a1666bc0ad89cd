namespace Fathom.Runtime;

/// <summary>Thrown when a forward pass would write past the end of a session's KV cache.</summary>
public sealed class ContextFullException(int position, int tokens, int capacity)
    : InvalidOperationException($"The context is full: {position} tokens are cached and {tokens} more do not fit in a context of {capacity}.")
{
    public int Position { get; } = position;
    public int Tokens { get; } = tokens;
    public int Capacity { get; } = capacity;
}
