using System.Text;

namespace Fathom.Tokenization;

/// <summary>
/// The DeepSeek-V3 / R1 / R1-distill prompt layout: BOS, the system prompt, then <c>&lt;｜User｜&gt;</c> and
/// <c>&lt;｜Assistant｜&gt;</c> turns, each assistant turn closed by <c>&lt;｜end▁of▁sentence｜&gt;</c>, tool calls and tool
/// outputs in DeepSeek's markup. The quirks of the released templates (see <see cref="DeepSeekTemplateVariant"/>) are
/// reproduced on purpose: the model was trained on what the template writes, not on what it meant to write.
/// </summary>
public sealed class DeepSeekChatTemplate : ChatTemplate
{
    public const string BeginOfSentence = "<｜begin▁of▁sentence｜>";
    public const string EndOfSentence = "<｜end▁of▁sentence｜>";
    public const string UserMarker = "<｜User｜>";
    private const string AssistantMarker = DeepSeekTemplateVariant.AssistantMarker;
    private const string ToolCallsBegin = "<｜tool▁calls▁begin｜>";
    private const string ToolCallsEnd = "<｜tool▁calls▁end｜>";
    private const string ToolCallBegin = "<｜tool▁call▁begin｜>";
    private const string ToolCallEnd = "<｜tool▁call▁end｜>";
    private const string ToolSeparator = "<｜tool▁sep｜>";
    private const string ToolOutputsBegin = "<｜tool▁outputs▁begin｜>";
    private const string ToolOutputsEnd = "<｜tool▁outputs▁end｜>";
    private const string ToolOutputBegin = "<｜tool▁output▁begin｜>";
    private const string ToolOutputEnd = "<｜tool▁output▁end｜>";

    public DeepSeekChatTemplate(DeepSeekTemplateVariant variant, string defaultBosText = BeginOfSentence)
    {
        Variant = variant ?? throw new ArgumentNullException(nameof(variant));
        DefaultBosText = defaultBosText ?? throw new ArgumentNullException(nameof(defaultBosText));
    }

    public DeepSeekTemplateVariant Variant { get; }

    public override ChatTemplateFamily Family =>
        Variant.StripsEarlierReasoning || OpensThinking ? ChatTemplateFamily.DeepSeekR1 : ChatTemplateFamily.DeepSeekV3;

    public override bool OpensThinking => Variant.GenerationPrompt.EndsWith("<think>\n", StringComparison.Ordinal);

    public override string DefaultBosText { get; }

    private protected override void RenderCore(StringBuilder output, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, ChatTemplateOptions options)
    {
        output.Append(BosText(options));
        AppendSystemPrompt(output, messages);
        if (Variant.TurnLayout == DeepSeekTurnLayout.MarkerAfterUser)
        {
            RenderMarkerAfterUser(output, messages, addGenerationPrompt);
            return;
        }

        // The templates' namespace flags. "first call written" and "first output written" are never reset, as released.
        bool inToolOutputs = false, firstCallWritten = false, firstOutputWritten = false;
        foreach (var message in messages)
        {
            switch (message.Role)
            {
                case ChatRole.User:
                    inToolOutputs = false;
                    output.Append(UserMarker).Append(message.Content);
                    break;
                case ChatRole.Assistant:
                    bool isToolCallTurn = Variant.ToolCallLayout == DeepSeekToolCallLayout.HasToolCalls
                        ? message.ToolCalls is not null
                        : message.Content is null;
                    if (isToolCallTurn)
                    {
                        inToolOutputs = false;
                        AppendToolCalls(output, message, ref firstCallWritten);
                    }
                    else if (inToolOutputs)
                    {
                        // The answer after tool outputs: written raw, reasoning not stripped.
                        output.Append(ToolOutputsEnd).Append(message.Content).Append(EndOfSentence);
                        inToolOutputs = false;
                    }
                    else
                    {
                        output.Append(AssistantMarker).Append(AnswerText(message.Content!)).Append(EndOfSentence);
                    }
                    break;
                case ChatRole.Tool:
                    inToolOutputs = true;
                    AppendToolOutput(output, message.Content!, ref firstOutputWritten);
                    break;
            }
        }
        if (inToolOutputs)
            output.Append(ToolOutputsEnd);
        if (addGenerationPrompt && !inToolOutputs)
            output.Append(Variant.GenerationPrompt);
    }

    /// <summary>The V3-0324 / R1-0528 layout: the user turn writes the assistant marker, tool-call state resets per turn.</summary>
    private void RenderMarkerAfterUser(StringBuilder output, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        bool inToolOutputs = false, lastWasUser = false, firstOutputWritten = false;
        foreach (var message in messages)
        {
            switch (message.Role)
            {
                case ChatRole.User:
                    inToolOutputs = false;
                    lastWasUser = true;
                    output.Append(UserMarker).Append(message.Content).Append(AssistantMarker);
                    break;
                case ChatRole.Assistant when message.ToolCalls is { } calls:
                    lastWasUser = false;
                    if (inToolOutputs)
                        output.Append(ToolOutputsEnd);
                    inToolOutputs = false;
                    firstOutputWritten = false;
                    output.Append(message.Content).Append(ToolCallsBegin);
                    for (int c = 0; c < calls.Count; c++)
                    {
                        if (c > 0)
                            output.Append('\n');
                        AppendCall(output, calls[c]);
                    }
                    output.Append(ToolCallsEnd).Append(EndOfSentence);
                    break;
                case ChatRole.Assistant:
                    lastWasUser = false;
                    if (inToolOutputs)
                    {
                        output.Append(ToolOutputsEnd).Append(message.Content).Append(EndOfSentence);
                        inToolOutputs = false;
                    }
                    else
                    {
                        output.Append(AnswerText(message.Content!)).Append(EndOfSentence);
                    }
                    break;
                case ChatRole.Tool:
                    lastWasUser = false;
                    inToolOutputs = true;
                    AppendToolOutput(output, message.Content!, ref firstOutputWritten);
                    break;
            }
        }
        if (inToolOutputs)
            output.Append(ToolOutputsEnd);
        if (addGenerationPrompt && !lastWasUser && !inToolOutputs)
            output.Append(Variant.GenerationPrompt);
    }

    /// <summary>An assistant answer as written back into the prompt: R1 templates keep only the text after the last <c>&lt;/think&gt;</c>.</summary>
    private string AnswerText(string content) =>
        Variant.StripsEarlierReasoning ? JinjaText.AfterLast(content, "</think>") : content;

    /// <summary>A tool result; the first of the conversation opens the outputs block (never reopened, as released).</summary>
    private void AppendToolOutput(StringBuilder output, string content, ref bool firstOutputWritten)
    {
        if (!firstOutputWritten)
        {
            output.Append(ToolOutputsBegin);
            firstOutputWritten = true;
        }
        else
        {
            output.Append(Variant.ToolOutputSeparator);
        }
        output.Append(ToolOutputBegin).Append(content).Append(ToolOutputEnd);
    }

    private void AppendSystemPrompt(StringBuilder output, IReadOnlyList<ChatMessage> messages)
    {
        if (Variant.SystemPrompts == DeepSeekSystemPrompts.LastOnly)
        {
            for (int i = messages.Count - 1; i >= 0; i--)
            {
                if (messages[i].Role == ChatRole.System)
                {
                    output.Append(messages[i].Content);
                    return;
                }
            }
            return;
        }
        bool first = true;
        foreach (var message in messages)
        {
            if (message.Role != ChatRole.System)
                continue;
            if (!first)
                output.Append("\n\n");
            output.Append(message.Content);
            first = false;
        }
    }

    private void AppendToolCalls(StringBuilder output, ChatMessage message, ref bool firstCallWritten)
    {
        var calls = message.ToolCalls ?? throw new ChatTemplateException(
            "An assistant message with null content must carry tool calls for the DeepSeek template.");
        foreach (var call in calls)
        {
            if (!firstCallWritten)
            {
                output.Append(AssistantMarker);
                if (message.Content is not null)
                    output.Append(message.Content);
                output.Append(ToolCallsBegin);
                AppendCall(output, call);
                firstCallWritten = true;
            }
            else
            {
                output.Append('\n');
                AppendCall(output, call);
                if (Variant.ToolCallLayout == DeepSeekToolCallLayout.ContentIsNull)
                    output.Append(ToolCallsEnd).Append(EndOfSentence);
            }
        }
        if (Variant.ToolCallLayout == DeepSeekToolCallLayout.HasToolCalls)
            output.Append(ToolCallsEnd).Append(EndOfSentence);
    }

    private static void AppendCall(StringBuilder output, ChatToolCall call) =>
        output.Append(ToolCallBegin).Append(call.Type).Append(ToolSeparator).Append(call.Name)
            .Append("\n```json\n").Append(call.ArgumentsJson).Append("\n```").Append(ToolCallEnd);
}
