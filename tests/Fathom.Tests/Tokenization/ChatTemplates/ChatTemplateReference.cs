using System.Text.Json;
using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

/// <summary>
/// The reference renderings in Tokenization/Data/chat-templates.expected.json, produced by Hugging Face's Jinja engine
/// from the real template texts (tests/reference/chat-templates/render.mjs), read into Fathom's conversation model.
/// </summary>
internal static class ChatTemplateReference
{
    private static readonly Lazy<JsonDocument> Document = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Tokenization", "Data", "chat-templates.expected.json"))));

    public static JsonElement Root => Document.Value.RootElement;

    public static IEnumerable<JsonElement> Templates => Root.GetProperty("templates").EnumerateArray();

    public static JsonElement Template(string id) => Templates.Single(t => t.GetProperty("id").GetString() == id);

    public static JsonElement Conversation(string name) =>
        Root.GetProperty("conversations").EnumerateArray().Single(c => c.GetProperty("name").GetString() == name);

    public static string? OptionalString(JsonElement element, string property) =>
        element.TryGetProperty(property, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    public static List<ChatMessage> Messages(JsonElement conversation)
    {
        var messages = new List<ChatMessage>();
        foreach (var m in conversation.GetProperty("messages").EnumerateArray())
        {
            List<ChatToolCall>? calls = null;
            if (m.TryGetProperty("tool_calls", out var toolCalls))
            {
                calls = [];
                foreach (var call in toolCalls.EnumerateArray())
                {
                    var function = call.GetProperty("function");
                    calls.Add(new ChatToolCall(call.GetProperty("id").GetString()!, function.GetProperty("name").GetString()!, function.GetProperty("arguments").GetString()!)
                    {
                        Type = call.GetProperty("type").GetString()!,
                    });
                }
            }
            messages.Add(new ChatMessage(ChatRoles.Parse(m.GetProperty("role").GetString()), OptionalString(m, "content"))
            {
                ReasoningContent = OptionalString(m, "reasoning_content"),
                ToolCalls = calls,
                ToolCallId = OptionalString(m, "tool_call_id"),
                Name = OptionalString(m, "name"),
            });
        }
        return messages;
    }

    public static ChatTemplateOptions Options(JsonElement template, JsonElement conversation)
    {
        List<ChatToolDefinition>? tools = null;
        if (conversation.TryGetProperty("tools", out var toolsJson))
            tools = toolsJson.EnumerateArray().Select(t => ChatToolDefinition.FromJson(t.GetRawText())).ToList();
        bool? enableThinking = null;
        string? dateString = null;
        if (conversation.TryGetProperty("options", out var options))
        {
            if (options.TryGetProperty("enable_thinking", out var thinking))
                enableThinking = thinking.GetBoolean();
            dateString = OptionalString(options, "date_string");
        }
        return new ChatTemplateOptions
        {
            BosText = OptionalString(template, "bosToken") ?? "",
            Tools = tools,
            EnableThinking = enableThinking,
            DateString = dateString,
        };
    }
}
