namespace Fathom.Tokenization;

/// <summary>
/// One turn of a conversation. <see cref="Content"/> may be null only for an assistant turn that carries
/// <see cref="ToolCalls"/>; <see cref="ReasoningContent"/> is an assistant's separated thinking (templates that know
/// it, like Qwen3's, place it; the others ignore it); <see cref="ToolCallId"/> and <see cref="Name"/> label tool results.
/// </summary>
public sealed record ChatMessage(ChatRole Role, string? Content)
{
    public string? ReasoningContent { get; init; }

    /// <summary>Null when the assistant called no tools; never empty.</summary>
    public IReadOnlyList<ChatToolCall>? ToolCalls { get; init; }

    public string? ToolCallId { get; init; }

    public string? Name { get; init; }

    public static ChatMessage System(string content) => new(ChatRole.System, content);

    public static ChatMessage User(string content) => new(ChatRole.User, content);

    public static ChatMessage Assistant(string? content, string? reasoningContent = null, IReadOnlyList<ChatToolCall>? toolCalls = null) =>
        new(ChatRole.Assistant, content) { ReasoningContent = reasoningContent, ToolCalls = toolCalls };

    public static ChatMessage Tool(string content, string? toolCallId = null, string? name = null) =>
        new(ChatRole.Tool, content) { ToolCallId = toolCallId, Name = name };
}
