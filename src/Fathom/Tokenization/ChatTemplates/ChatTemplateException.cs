namespace Fathom.Tokenization;

/// <summary>A conversation that a chat template cannot render (bad role, missing content, unsupported shape).</summary>
public sealed class ChatTemplateException : Exception
{
    public ChatTemplateException(string message) : base(message) { }
}
