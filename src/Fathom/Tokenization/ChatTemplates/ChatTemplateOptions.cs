namespace Fathom.Tokenization;

/// <summary>Values a template reads besides the messages (the variables Jinja templates get from the caller).</summary>
public sealed record ChatTemplateOptions
{
    /// <summary>The text written for <c>bos_token</c>; null uses the template's own default.</summary>
    public string? BosText { get; init; }

    /// <summary>Tools offered to the model, for the templates that list them (Qwen, Llama 3.1); null or empty: none.</summary>
    public IReadOnlyList<ChatToolDefinition>? Tools { get; init; }

    /// <summary>Qwen3's <c>enable_thinking</c>: false writes an empty think block so the model answers directly.</summary>
    public bool? EnableThinking { get; init; }

    /// <summary>Llama 3.1's <c>date_string</c> ("Today Date: ..."); null keeps the template's default, 26 Jul 2024.</summary>
    public string? DateString { get; init; }
}
