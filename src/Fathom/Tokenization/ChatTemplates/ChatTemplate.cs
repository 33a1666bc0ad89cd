using System.Text;

namespace Fathom.Tokenization;

/// <summary>
/// Renders a conversation into the exact prompt text a model was trained on, special tokens written as text, the
/// same characters the model's Jinja chat template produces. Fathom does not run Jinja: each family is written
/// natively and tested against the real templates rendered by Hugging Face's Jinja engine.
/// </summary>
public abstract class ChatTemplate
{
    public abstract ChatTemplateFamily Family { get; }

    /// <summary>
    /// True when the generation prompt ends inside an opened <c>&lt;think&gt;</c> block, so the model's first output is
    /// reasoning and the generator must treat text up to <c>&lt;/think&gt;</c> as reasoning, not answer.
    /// </summary>
    public abstract bool OpensThinking { get; }

    /// <summary>The <c>bos_token</c> text used when the options give none (empty for templates that write none).</summary>
    public abstract string DefaultBosText { get; }

    /// <summary>
    /// Renders <paramref name="messages"/>; with <paramref name="addGenerationPrompt"/> the text ends where the
    /// assistant's next turn begins. Conversations the template cannot express throw <see cref="ChatTemplateException"/>.
    /// </summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, ChatTemplateOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        Validate(messages);
        var output = new StringBuilder();
        RenderCore(output, messages, addGenerationPrompt, options ?? new ChatTemplateOptions());
        return output.ToString();
    }

    private protected abstract void RenderCore(StringBuilder output, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, ChatTemplateOptions options);

    private protected string BosText(ChatTemplateOptions options) => options.BosText ?? DefaultBosText;

    /// <summary>The checks every family shares: known roles, content where a template reads it, well-formed tool calls.</summary>
    private static void Validate(IReadOnlyList<ChatMessage> messages)
    {
        if (messages.Count == 0)
            throw new ChatTemplateException("A conversation needs at least one message.");
        for (int i = 0; i < messages.Count; i++)
        {
            var message = messages[i] ?? throw new ChatTemplateException($"Message {i} is null.");
            var role = message.Role.ToName();
            if (message.ToolCalls is { } calls)
            {
                if (message.Role != ChatRole.Assistant)
                    throw new ChatTemplateException($"Message {i} ({role}) has tool calls; only assistant messages can.");
                if (calls.Count == 0)
                    throw new ChatTemplateException($"Message {i} has an empty tool-call list; leave ToolCalls null instead.");
                for (int c = 0; c < calls.Count; c++)
                {
                    var call = calls[c] ?? throw new ChatTemplateException($"Message {i}, tool call {c} is null.");
                    if (call.Name is null || call.ArgumentsJson is null || call.Type is null)
                        throw new ChatTemplateException($"Message {i}, tool call {c} needs a type, a name and arguments.");
                }
            }
            if (message.Content is null && !(message.Role == ChatRole.Assistant && message.ToolCalls is not null))
                throw new ChatTemplateException($"Message {i} ({role}) has no content; only an assistant message with tool calls may omit it.");
        }
    }
}
