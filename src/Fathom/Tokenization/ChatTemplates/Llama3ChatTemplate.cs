using System.Text;

namespace Fathom.Tokenization;

/// <summary>Which Meta template a Llama-3 model ships.</summary>
public enum Llama3Layout
{
    /// <summary>Llama 3: every message as a header block, BOS before the first.</summary>
    Plain,

    /// <summary>
    /// Llama 3.1: BOS, a system block that always carries the knowledge-cutoff and date lines, tools listed in the first
    /// user message, a single tool call per assistant turn as JSON, tool results in <c>ipython</c> blocks.
    /// </summary>
    Llama31,
}

/// <summary>
/// <c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\n</c> + trimmed content + <c>&lt;|eot_id|&gt;</c>, as Meta's Llama 3
/// and 3.1 templates write it.
/// </summary>
public sealed class Llama3ChatTemplate : ChatTemplate
{
    public const string BeginOfText = "<|begin_of_text|>";
    public const string DefaultDateString = "26 Jul 2024";
    private const string EndOfTurn = "<|eot_id|>";

    public Llama3ChatTemplate(Llama3Layout layout, string defaultBosText = BeginOfText)
    {
        Layout = layout;
        DefaultBosText = defaultBosText ?? throw new ArgumentNullException(nameof(defaultBosText));
    }

    public Llama3Layout Layout { get; }

    public override ChatTemplateFamily Family => ChatTemplateFamily.Llama3;

    public override bool OpensThinking => false;

    public override string DefaultBosText { get; }

    private protected override void RenderCore(StringBuilder output, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, ChatTemplateOptions options)
    {
        if (Layout == Llama3Layout.Plain)
            RenderPlain(output, messages, options);
        else
            RenderLlama31(output, messages, options);
        if (addGenerationPrompt)
            AppendHeader(output, "assistant");
    }

    private static void AppendHeader(StringBuilder output, string role) =>
        output.Append("<|start_header_id|>").Append(role).Append("<|end_header_id|>\n\n");

    private void RenderPlain(StringBuilder output, IReadOnlyList<ChatMessage> messages, ChatTemplateOptions options)
    {
        for (int i = 0; i < messages.Count; i++)
        {
            var message = messages[i];
            if (message.Content is null)
                throw new ChatTemplateException("The Llama 3 template writes every message's text; an assistant message needs content, not only tool calls.");
            if (i == 0)
                output.Append(BosText(options));
            AppendHeader(output, message.Role.ToName());
            output.Append(JinjaText.Trim(message.Content)).Append(EndOfTurn);
        }
    }

    private void RenderLlama31(StringBuilder output, IReadOnlyList<ChatMessage> messages, ChatTemplateOptions options)
    {
        output.Append(BosText(options));
        int next = 0;
        string systemMessage = "";
        if (messages[0].Role == ChatRole.System)
        {
            systemMessage = JinjaText.Trim(messages[0].Content!);
            next = 1;
        }
        var tools = options.Tools is { Count: > 0 } t ? t : null;

        AppendHeader(output, "system");
        if (tools is not null)
            output.Append("Environment: ipython\n");
        output.Append("Cutting Knowledge Date: December 2023\n");
        output.Append("Today Date: ").Append(options.DateString ?? DefaultDateString).Append("\n\n");
        output.Append(systemMessage).Append(EndOfTurn);

        if (tools is not null)
        {
            // Tools go into the first remaining message, whatever its role, as the template does.
            if (next >= messages.Count)
                throw new ChatTemplateException("Cannot put tools in the first user message when there's no first user message!");
            string firstUserMessage = JinjaText.Trim(messages[next].Content
                ?? throw new ChatTemplateException("The Llama 3.1 template puts the tools into the first message, which needs content."));
            next++;
            AppendHeader(output, "user");
            output.Append("Given the following functions, please respond with a JSON for a function call ")
                .Append("with its proper arguments that best answers the given prompt.\n\n")
                .Append("Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.")
                .Append("Do not use variables.\n\n");
            foreach (var tool in tools)
            {
                JinjaJson.Append(output, tool.Json, indent: 4);
                output.Append("\n\n");
            }
            output.Append(firstUserMessage).Append(EndOfTurn);
        }

        for (int i = next; i < messages.Count; i++)
        {
            var message = messages[i];
            if (message.ToolCalls is { } calls)
            {
                if (calls.Count != 1)
                    throw new ChatTemplateException("This model only supports single tool-calls at once!");
                AppendHeader(output, "assistant");
                output.Append("{\"name\": \"").Append(calls[0].Name).Append("\", \"parameters\": ");
                JinjaText.AppendJsonString(output, calls[0].ArgumentsJson); // tojson of the arguments string
                output.Append('}').Append(EndOfTurn);
            }
            else if (message.Role == ChatRole.Tool)
            {
                AppendHeader(output, "ipython");
                JinjaText.AppendJsonString(output, message.Content!); // a string "is iterable" in Jinja, so it goes through tojson
                output.Append(EndOfTurn);
            }
            else
            {
                AppendHeader(output, message.Role.ToName());
                output.Append(JinjaText.Trim(message.Content!)).Append(EndOfTurn);
            }
        }
    }
}
