using System.Text;

namespace Fathom.Tokenization;

/// <summary>
/// ChatML as the Qwen2/Qwen2.5 template writes it: <c>&lt;|im_start|&gt;role\n...&lt;|im_end|&gt;\n</c> per message, a
/// system block always first (the template's default system prompt when the conversation has none), tools listed in
/// that block, tool calls as <c>&lt;tool_call&gt;</c> JSON and consecutive tool results grouped in one user turn.
/// </summary>
public sealed class ChatMLChatTemplate : ChatTemplate
{
    public const string QwenDefaultSystemPrompt = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
    internal const string ImStart = "<|im_start|>";
    internal const string ImEnd = "<|im_end|>";

    private const string ToolsPreamble =
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";

    private const string ToolsPostamble =
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments within " +
        "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>";

    /// <param name="defaultSystemPrompt">Written when the conversation has no leading system message; null writes no system block then.</param>
    public ChatMLChatTemplate(string? defaultSystemPrompt = QwenDefaultSystemPrompt) => DefaultSystemPrompt = defaultSystemPrompt;

    public string? DefaultSystemPrompt { get; }

    public override ChatTemplateFamily Family => ChatTemplateFamily.ChatML;

    public override bool OpensThinking => false;

    public override string DefaultBosText => "";

    private protected override void RenderCore(StringBuilder output, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, ChatTemplateOptions options)
    {
        AppendSystemBlock(output, messages, options.Tools, DefaultSystemPrompt);

        for (int i = 0; i < messages.Count; i++)
        {
            var message = messages[i];
            switch (message.Role)
            {
                case ChatRole.System when i == 0:
                    break; // already written above
                case ChatRole.System:
                case ChatRole.User:
                case ChatRole.Assistant when message.ToolCalls is null:
                    output.Append(ImStart).Append(message.Role.ToName()).Append('\n').Append(message.Content).Append(ImEnd).Append('\n');
                    break;
                case ChatRole.Assistant:
                    output.Append(ImStart).Append("assistant");
                    if (!string.IsNullOrEmpty(message.Content))
                        output.Append('\n').Append(message.Content);
                    foreach (var call in message.ToolCalls!)
                    {
                        output.Append("\n<tool_call>\n{\"name\": \"").Append(call.Name).Append("\", \"arguments\": ");
                        JinjaText.AppendJsonString(output, call.ArgumentsJson); // the template applies tojson to the arguments string
                        output.Append("}\n</tool_call>");
                    }
                    output.Append(ImEnd).Append('\n');
                    break;
                case ChatRole.Tool:
                    AppendToolResult(output, messages, i);
                    break;
            }
        }
        if (addGenerationPrompt)
            output.Append(ImStart).Append("assistant\n");
    }

    /// <summary>
    /// The leading system block: the conversation's first system message (else the default prompt, if any), followed
    /// by the tool list when tools are offered. The first system message is not written again in the turn loop.
    /// </summary>
    internal static void AppendSystemBlock(StringBuilder output, IReadOnlyList<ChatMessage> messages, IReadOnlyList<ChatToolDefinition>? tools, string? defaultSystemPrompt)
    {
        string? systemPrompt = messages[0].Role == ChatRole.System ? messages[0].Content : defaultSystemPrompt;
        if (tools is { Count: > 0 })
        {
            output.Append(ImStart).Append("system\n");
            if (systemPrompt is not null)
                output.Append(systemPrompt).Append("\n\n");
            output.Append(ToolsPreamble);
            foreach (var tool in tools)
            {
                output.Append('\n');
                JinjaJson.Append(output, tool.Json);
            }
            output.Append(ToolsPostamble).Append(ImEnd).Append('\n');
        }
        else if (systemPrompt is not null)
        {
            output.Append(ImStart).Append("system\n").Append(systemPrompt).Append(ImEnd).Append('\n');
        }
    }

    /// <summary>Consecutive tool results share one user turn, each in its own <c>&lt;tool_response&gt;</c>.</summary>
    internal static void AppendToolResult(StringBuilder output, IReadOnlyList<ChatMessage> messages, int i)
    {
        if (i == 0 || messages[i - 1].Role != ChatRole.Tool)
            output.Append(ImStart).Append("user");
        output.Append("\n<tool_response>\n").Append(messages[i].Content).Append("\n</tool_response>");
        if (i == messages.Count - 1 || messages[i + 1].Role != ChatRole.Tool)
            output.Append(ImEnd).Append('\n');
    }
}
