namespace Fathom.Tokenization;

/// <summary>How a DeepSeek template combines the system messages into the prompt's preamble.</summary>
public enum DeepSeekSystemPrompts
{
    /// <summary>All system messages, joined by a blank line (DeepSeek-V3, R1).</summary>
    JoinAll,

    /// <summary>Only the last system message (the R1 distills).</summary>
    LastOnly,
}

/// <summary>How a DeepSeek template decides that an assistant turn is a tool-call turn.</summary>
public enum DeepSeekToolCallLayout
{
    /// <summary>
    /// A turn with null content is a tool-call turn; a turn with content is written as text and its calls are dropped.
    /// As released, only calls after the first are followed by the closing markers (DeepSeek-V3, the R1 distills).
    /// </summary>
    ContentIsNull,

    /// <summary>Any turn with tool calls is a tool-call turn, content first, then the calls and closing markers (R1).</summary>
    HasToolCalls,
}

/// <summary>Where a DeepSeek template writes the <c>&lt;｜Assistant｜&gt;</c> marker.</summary>
public enum DeepSeekTurnLayout
{
    /// <summary>Before each assistant turn and as the generation prompt (DeepSeek-V3, R1, the distills).</summary>
    MarkerBeforeAssistant,

    /// <summary>
    /// Right after each user turn, so a prompt ending in a user turn already ends with the marker and the generation
    /// prompt is written only after other turns (DeepSeek-V3-0324 and R1-0528, whose templates track <c>is_last_user</c>).
    /// </summary>
    MarkerAfterUser,
}

/// <summary>
/// The switches that tell the DeepSeek-V3, R1 and R1-distill templates apart. They share one structure and differ
/// only in these points; <see cref="ChatTemplates.Detect"/> reads them from a GGUF's template text.
/// </summary>
public sealed record DeepSeekTemplateVariant(
    DeepSeekSystemPrompts SystemPrompts,
    DeepSeekToolCallLayout ToolCallLayout,
    bool StripsEarlierReasoning,
    string ToolOutputSeparator,
    string GenerationPrompt,
    DeepSeekTurnLayout TurnLayout = DeepSeekTurnLayout.MarkerBeforeAssistant)
{
    public const string AssistantMarker = "<｜Assistant｜>";
    public const string ThinkingGenerationPrompt = AssistantMarker + "<think>\n";

    /// <summary>deepseek-ai/DeepSeek-V3.</summary>
    public static DeepSeekTemplateVariant V3 { get; } =
        new(DeepSeekSystemPrompts.JoinAll, DeepSeekToolCallLayout.ContentIsNull, false, "\n", AssistantMarker);

    /// <summary>deepseek-ai/DeepSeek-V3-0324.</summary>
    public static DeepSeekTemplateVariant V3March2025 { get; } =
        new(DeepSeekSystemPrompts.JoinAll, DeepSeekToolCallLayout.HasToolCalls, false, "\n", AssistantMarker, DeepSeekTurnLayout.MarkerAfterUser);

    /// <summary>deepseek-ai/DeepSeek-R1 as first released (the generation prompt does not open <c>&lt;think&gt;</c>).</summary>
    public static DeepSeekTemplateVariant R1 { get; } =
        new(DeepSeekSystemPrompts.JoinAll, DeepSeekToolCallLayout.HasToolCalls, true, "", AssistantMarker);

    /// <summary>deepseek-ai/DeepSeek-R1 after its template update, which opens <c>&lt;think&gt;\n</c> in the generation prompt.</summary>
    public static DeepSeekTemplateVariant R1Thinking { get; } =
        new(DeepSeekSystemPrompts.JoinAll, DeepSeekToolCallLayout.HasToolCalls, true, "", ThinkingGenerationPrompt);

    /// <summary>deepseek-ai/DeepSeek-R1-Distill-Qwen-* and -Llama-* (current template, opens <c>&lt;think&gt;\n</c>).</summary>
    public static DeepSeekTemplateVariant R1Distill { get; } =
        new(DeepSeekSystemPrompts.LastOnly, DeepSeekToolCallLayout.ContentIsNull, true, "\n", ThinkingGenerationPrompt);

    /// <summary>The R1 distills' template as first released (generation prompt without <c>&lt;think&gt;</c>).</summary>
    public static DeepSeekTemplateVariant R1DistillOriginal { get; } =
        new(DeepSeekSystemPrompts.LastOnly, DeepSeekToolCallLayout.ContentIsNull, true, "\n", AssistantMarker);
}
