using System.Text.Json;

namespace Fathom.Tokenization;

/// <summary>
/// A tool the model may call, kept as the JSON object an OpenAI-style request sends
/// (<c>{"type": "function", "function": {"name", "description", "parameters"}}</c>). Templates that list tools
/// re-serialise this object with Jinja's <c>tojson</c>, so the key order given here is the order in the prompt.
/// </summary>
public sealed class ChatToolDefinition
{
    private ChatToolDefinition(JsonElement json) => Json = json;

    /// <summary>The tool object (a detached copy, safe to keep).</summary>
    public JsonElement Json { get; }

    /// <summary>Wraps a tool object given as JSON text; anything but a JSON object is a clear error.</summary>
    public static ChatToolDefinition FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonElement element;
        try
        {
            using var document = JsonDocument.Parse(json);
            element = document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new ChatTemplateException($"A tool definition is not valid JSON: {e.Message}");
        }
        if (element.ValueKind != JsonValueKind.Object)
            throw new ChatTemplateException($"A tool definition must be a JSON object, not {element.ValueKind}.");
        return new ChatToolDefinition(element);
    }

    /// <summary>Builds the usual function tool; <paramref name="parametersJson"/> is its JSON-schema object.</summary>
    public static ChatToolDefinition Function(string name, string? description, string parametersJson)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(parametersJson);
        var parameters = FromJson(parametersJson).Json;
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("type", "function");
            writer.WriteStartObject("function");
            writer.WriteString("name", name);
            if (description is not null)
                writer.WriteString("description", description);
            writer.WritePropertyName("parameters");
            parameters.WriteTo(writer);
            writer.WriteEndObject();
            writer.WriteEndObject();
        }
        using var document = JsonDocument.Parse(buffer.WrittenMemory);
        return new ChatToolDefinition(document.RootElement.Clone());
    }
}
