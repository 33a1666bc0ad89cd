namespace Fathom.Tokenization;

/// <summary>
/// Recognises a model's chat-template family from the Jinja text a GGUF carries in <c>tokenizer.chat_template</c>,
/// by markers that every template of the family writes, and picks the native renderer for it.
/// </summary>
public static class ChatTemplates
{
    /// <summary>
    /// Detects the family of <paramref name="jinjaTemplate"/>. <paramref name="bosText"/> and <paramref name="eosText"/>
    /// (the vocabulary's BOS/EOS token texts) become the renderer's BOS text and guide the fallback when the template
    /// is missing or unknown.
    /// </summary>
    public static ChatTemplateDetection Detect(string? jinjaTemplate, string? bosText = null, string? eosText = null)
    {
        if (string.IsNullOrWhiteSpace(jinjaTemplate))
            return Fallback("the model has no chat template", bosText, eosText);

        if (jinjaTemplate.Contains(DeepSeekTemplateVariant.AssistantMarker, StringComparison.Ordinal)
            && jinjaTemplate.Contains(DeepSeekChatTemplate.UserMarker, StringComparison.Ordinal))
            return DetectDeepSeek(jinjaTemplate, bosText);

        if (jinjaTemplate.Contains(ChatMLChatTemplate.ImStart, StringComparison.Ordinal))
        {
            // Qwen3's template splits reasoning out of assistant turns; Qwen2/2.5 ChatML has no notion of it.
            if (jinjaTemplate.Contains("</think>", StringComparison.Ordinal) || jinjaTemplate.Contains("reasoning_content", StringComparison.Ordinal))
                return new(ChatTemplateFamily.Qwen3, new Qwen3ChatTemplate(), true, "ChatML markers with <think>/reasoning_content handling (Qwen3)");
            bool qwenDefault = jinjaTemplate.Contains(ChatMLChatTemplate.QwenDefaultSystemPrompt, StringComparison.Ordinal);
            return new(ChatTemplateFamily.ChatML, new ChatMLChatTemplate(qwenDefault ? ChatMLChatTemplate.QwenDefaultSystemPrompt : null), true,
                qwenDefault ? "ChatML markers with Qwen's default system prompt (Qwen2.5)" : "ChatML markers without a default system prompt");
        }

        if (jinjaTemplate.Contains("<|start_header_id|>", StringComparison.Ordinal) && jinjaTemplate.Contains("<|eot_id|>", StringComparison.Ordinal))
        {
            bool llama31 = jinjaTemplate.Contains("Cutting Knowledge Date", StringComparison.Ordinal);
            return new(ChatTemplateFamily.Llama3, new Llama3ChatTemplate(llama31 ? Llama3Layout.Llama31 : Llama3Layout.Plain, bosText ?? Llama3ChatTemplate.BeginOfText), true,
                llama31 ? "Llama header markers with the knowledge-cutoff system block (Llama 3.1)" : "Llama header markers (Llama 3)");
        }

        return Fallback("the chat template matches no known family", bosText, eosText);
    }

    /// <summary>
    /// The renderer for a family in its newest released form that has a reference rendering: DeepSeek-V3-0324,
    /// DeepSeek-R1 (updated, opens <c>&lt;think&gt;</c>), Qwen2.5, Qwen3, Llama 3.1.
    /// </summary>
    public static ChatTemplate ForFamily(ChatTemplateFamily family, string? bosText = null) => family switch
    {
        ChatTemplateFamily.DeepSeekV3 => new DeepSeekChatTemplate(DeepSeekTemplateVariant.V3March2025, bosText ?? DeepSeekChatTemplate.BeginOfSentence),
        ChatTemplateFamily.DeepSeekR1 => new DeepSeekChatTemplate(DeepSeekTemplateVariant.R1Thinking, bosText ?? DeepSeekChatTemplate.BeginOfSentence),
        ChatTemplateFamily.ChatML => new ChatMLChatTemplate(),
        ChatTemplateFamily.Qwen3 => new Qwen3ChatTemplate(),
        ChatTemplateFamily.Llama3 => new Llama3ChatTemplate(Llama3Layout.Llama31, bosText ?? Llama3ChatTemplate.BeginOfText),
        _ => throw new ArgumentOutOfRangeException(nameof(family), family, "No renderer for an unrecognized family."),
    };

    private static ChatTemplateDetection DetectDeepSeek(string text, string? bosText)
    {
        bool markerAfterUser = text.Contains("is_last_user", StringComparison.Ordinal);
        var variant = new DeepSeekTemplateVariant(
            SystemPrompts: text.Contains("is_first_sp", StringComparison.Ordinal) ? DeepSeekSystemPrompts.JoinAll : DeepSeekSystemPrompts.LastOnly,
            ToolCallLayout: markerAfterUser || text.Contains("'tool_calls' in message", StringComparison.Ordinal)
                ? DeepSeekToolCallLayout.HasToolCalls
                : DeepSeekToolCallLayout.ContentIsNull,
            StripsEarlierReasoning: text.Contains("</think>", StringComparison.Ordinal),
            ToolOutputSeparator: ContainsLiteral(text, "'\n<｜tool▁output▁begin｜>'") ? "\n" : "",
            GenerationPrompt: ContainsLiteral(text, "'<｜Assistant｜><think>\n'")
                ? DeepSeekTemplateVariant.ThinkingGenerationPrompt
                : DeepSeekTemplateVariant.AssistantMarker,
            TurnLayout: markerAfterUser ? DeepSeekTurnLayout.MarkerAfterUser : DeepSeekTurnLayout.MarkerBeforeAssistant);
        var template = new DeepSeekChatTemplate(variant, bosText ?? DeepSeekChatTemplate.BeginOfSentence);

        bool knownLayout = markerAfterUser
            ? text.Contains("'<｜User｜>' + message['content'] + '<｜Assistant｜>'", StringComparison.Ordinal)
            : variant.ToolCallLayout == DeepSeekToolCallLayout.HasToolCalls || text.Contains("message['content'] is none", StringComparison.Ordinal);
        if (!knownLayout)
            return new(ChatTemplateFamily.Unrecognized, template, false,
                "DeepSeek markers, but not one of the known DeepSeek layouts; using the closest DeepSeek variant");

        string name = template.Family == ChatTemplateFamily.DeepSeekR1 ? "DeepSeek-R1" : "DeepSeek-V3";
        return new(template.Family, template, true,
            $"<｜User｜>/<｜Assistant｜> markers ({name}: {variant.TurnLayout}, {variant.SystemPrompts} system prompts, {variant.ToolCallLayout} tool calls, "
            + $"{(variant.StripsEarlierReasoning ? "strips" : "keeps")} earlier reasoning, {(template.OpensThinking ? "opens" : "does not open")} <think>)");
    }

    /// <summary>
    /// Whether the template holds a string literal with these characters; a line break in it may be written as the
    /// escape \n or as a real line break (DeepSeek-V3's template text has both).
    /// </summary>
    private static bool ContainsLiteral(string text, string literal) =>
        text.Contains(literal, StringComparison.Ordinal) || text.Contains(literal.Replace("\n", "\\n", StringComparison.Ordinal), StringComparison.Ordinal);

    private static ChatTemplateDetection Fallback(string why, string? bosText, string? eosText)
    {
        if (bosText == DeepSeekChatTemplate.BeginOfSentence || eosText == DeepSeekChatTemplate.EndOfSentence)
            return new(ChatTemplateFamily.Unrecognized, new DeepSeekChatTemplate(DeepSeekTemplateVariant.V3, bosText ?? DeepSeekChatTemplate.BeginOfSentence), false,
                $"{why}; the DeepSeek BOS/EOS tokens suggest the DeepSeek layout");
        if (bosText == Llama3ChatTemplate.BeginOfText || eosText == "<|eot_id|>")
            return new(ChatTemplateFamily.Unrecognized, new Llama3ChatTemplate(Llama3Layout.Plain, bosText ?? Llama3ChatTemplate.BeginOfText), false,
                $"{why}; the Llama 3 BOS/EOS tokens suggest the Llama 3 layout");
        return new(ChatTemplateFamily.Unrecognized, new ChatMLChatTemplate(defaultSystemPrompt: null), false,
            $"{why}; falling back to plain ChatML");
    }
}
