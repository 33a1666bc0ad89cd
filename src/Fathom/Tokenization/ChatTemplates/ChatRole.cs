namespace Fathom.Tokenization;

/// <summary>Who wrote a message in a conversation. Templates write these as the lower-case names below.</summary>
public enum ChatRole
{
    System,
    User,
    Assistant,
    Tool,
}

public static class ChatRoles
{
    /// <summary>The role's name as chat templates and OpenAI-style requests spell it.</summary>
    public static string ToName(this ChatRole role) => role switch
    {
        ChatRole.System => "system",
        ChatRole.User => "user",
        ChatRole.Assistant => "assistant",
        ChatRole.Tool => "tool",
        _ => throw new ChatTemplateException($"Unknown chat role value {(int)role}; expected system, user, assistant or tool."),
    };

    /// <summary>Parses a role name (as in an OpenAI-style request); anything else is a clear error.</summary>
    public static ChatRole Parse(string? name) => name switch
    {
        "system" => ChatRole.System,
        "user" => ChatRole.User,
        "assistant" => ChatRole.Assistant,
        "tool" => ChatRole.Tool,
        null => throw new ChatTemplateException("A chat message has no role; expected system, user, assistant or tool."),
        _ => throw new ChatTemplateException($"Unknown chat role '{name}'; expected system, user, assistant or tool."),
    };
}
