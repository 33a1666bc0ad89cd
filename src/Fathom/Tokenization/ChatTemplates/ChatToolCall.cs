namespace Fathom.Tokenization;

/// <summary>
/// One function call the assistant asked for, as in an OpenAI-style message: <paramref name="ArgumentsJson"/> is the
/// arguments object as JSON text, which templates copy into the prompt verbatim (or quote, where the template does).
/// </summary>
public sealed record ChatToolCall(string Id, string Name, string ArgumentsJson)
{
    /// <summary>The call type the templates print; every current template knows only "function".</summary>
    public string Type { get; init; } = "function";
}
