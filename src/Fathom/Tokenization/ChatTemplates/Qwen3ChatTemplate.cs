using System.Text;

namespace Fathom.Tokenization;

/// <summary>
/// Qwen3's ChatML: like Qwen2.5 but without a default system prompt, and with reasoning handling. An assistant turn's
/// reasoning (its <c>ReasoningContent</c>, or the text inside <c>&lt;think&gt;...&lt;/think&gt;</c>) is kept only for turns
/// after the last real user query (the agentic tool loop in progress) and dropped from earlier turns.
/// </summary>
public sealed class Qwen3ChatTemplate : ChatTemplate
{
    private const string ImStart = ChatMLChatTemplate.ImStart;
    private const string ImEnd = ChatMLChatTemplate.ImEnd;

    public override ChatTemplateFamily Family => ChatTemplateFamily.Qwen3;

    /// <summary>The generation prompt stops at <c>&lt;|im_start|&gt;assistant\n</c>; the model opens <c>&lt;think&gt;</c> itself.</summary>
    public override bool OpensThinking => false;

    public override string DefaultBosText => "";

    private protected override void RenderCore(StringBuilder output, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, ChatTemplateOptions options)
    {
        ChatMLChatTemplate.AppendSystemBlock(output, messages, options.Tools, defaultSystemPrompt: null);

        int lastQueryIndex = LastQueryIndex(messages);
        for (int i = 0; i < messages.Count; i++)
        {
            var message = messages[i];
            switch (message.Role)
            {
                case ChatRole.System when i == 0:
                    break;
                case ChatRole.System:
                case ChatRole.User:
                    output.Append(ImStart).Append(message.Role.ToName()).Append('\n').Append(message.Content).Append(ImEnd).Append('\n');
                    break;
                case ChatRole.Assistant:
                    AppendAssistant(output, message, keepReasoning: i > lastQueryIndex, isLast: i == messages.Count - 1);
                    break;
                case ChatRole.Tool:
                    ChatMLChatTemplate.AppendToolResult(output, messages, i);
                    break;
            }
        }
        if (addGenerationPrompt)
        {
            output.Append(ImStart).Append("assistant\n");
            if (options.EnableThinking == false)
                output.Append("<think>\n\n</think>\n\n");
        }
    }

    /// <summary>The last user message that is not a wrapped tool response; the whole conversation's end if none is.</summary>
    private static int LastQueryIndex(IReadOnlyList<ChatMessage> messages)
    {
        for (int i = messages.Count - 1; i >= 0; i--)
        {
            var message = messages[i];
            if (message.Role != ChatRole.User)
                continue;
            string content = message.Content!;
            bool wrappedToolResponse = content.StartsWith("<tool_response>", StringComparison.Ordinal)
                && content.EndsWith("</tool_response>", StringComparison.Ordinal);
            if (!wrappedToolResponse)
                return i;
        }
        return messages.Count - 1;
    }

    private static void AppendAssistant(StringBuilder output, ChatMessage message, bool keepReasoning, bool isLast)
    {
        string content = message.Content ?? throw new ChatTemplateException(
            "The Qwen3 template needs assistant content (an empty string alongside tool calls), not null.");
        string reasoning = "";
        if (message.ReasoningContent is not null)
        {
            reasoning = message.ReasoningContent;
        }
        else if (content.Contains("</think>", StringComparison.Ordinal))
        {
            string original = content;
            // Python's lstrip('\n') / rstrip('\n') are TrimStart('\n') / TrimEnd('\n').
            content = JinjaText.AfterLast(original, "</think>").TrimStart('\n');
            reasoning = JinjaText.AfterLast(JinjaText.BeforeFirst(original, "</think>").TrimEnd('\n'), "<think>").TrimStart('\n');
        }

        output.Append(ImStart).Append("assistant\n");
        if (keepReasoning && (isLast || reasoning.Length > 0))
            output.Append("<think>\n").Append(reasoning.Trim('\n')).Append("\n</think>\n\n").Append(content.TrimStart('\n'));
        else
            output.Append(content);

        if (message.ToolCalls is { } calls)
        {
            for (int c = 0; c < calls.Count; c++)
            {
                if (c > 0 || content.Length > 0)
                    output.Append('\n');
                // Arguments are a string here, which this template copies verbatim.
                output.Append("<tool_call>\n{\"name\": \"").Append(calls[c].Name).Append("\", \"arguments\": ")
                    .Append(calls[c].ArgumentsJson).Append("}\n</tool_call>");
            }
        }
        output.Append(ImEnd).Append('\n');
    }
}
