using Fathom.Gguf;
using Fathom.Models;
using Fathom.Runtime;
using Fathom.Tokenization;

namespace Fathom.Generation;

/// <summary>
/// A model ready to chat: the network, its tokenizer and its chat template, loaded from one GGUF file. Every
/// surface (CLI, server, <c>IChatClient</c>) starts here, so they all render, tokenize and generate the same way.
/// </summary>
public sealed class LoadedModel : IDisposable
{
    private LoadedModel(Model model, Tokenizer tokenizer, ChatTemplateDetection template)
    {
        Model = model;
        Tokenizer = tokenizer;
        Template = template;
        Generator = new Generator(model, tokenizer);
    }

    public Model Model { get; }
    public Tokenizer Tokenizer { get; }
    public ChatTemplateDetection Template { get; }
    public Generator Generator { get; }

    /// <summary>Opens a GGUF model (the first part of a split model opens all parts).</summary>
    public static LoadedModel Open(string path, ModelOptions? options = null)
    {
        GgufFile file = GgufFile.Open(path);
        try
        {
            Tokenizer tokenizer = Tokenizer.Create(TokenizerModel.FromGguf(file.Metadata));
            file.Metadata.TryGetString(GgufKeys.Tokenizer.ChatTemplate, out string? jinja);
            string? bos = tokenizer.BosId is int b ? tokenizer.TokenToPiece(b) : null;
            string? eos = tokenizer.EosId is int e ? tokenizer.TokenToPiece(e) : null;
            ChatTemplateDetection template = ChatTemplates.Detect(jinja, bos, eos);
            Model model = ModelLoader.Load(file, options, ownsFile: true);
            return new LoadedModel(model, tokenizer, template);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public InferenceSession CreateSession(int contextSize) =>
        Model.CreateSession(Math.Min(contextSize, Model.Config.ContextLength));

    /// <summary>
    /// Renders a conversation with the model's template (or <paramref name="template"/>, for a file whose own is
    /// missing or wrong) and tokenizes it; special tokens written by the template are parsed.
    /// </summary>
    public IReadOnlyList<int> TokenizeChat(IReadOnlyList<ChatMessage> messages, ChatTemplateOptions? options = null, ChatTemplate? template = null)
    {
        string bosText = Tokenizer.BosId is int b && Tokenizer.Model.AddBos ? Tokenizer.TokenToPiece(b) : "";
        string prompt = (template ?? Template.Template).Render(messages, addGenerationPrompt: true, (options ?? new ChatTemplateOptions()) with { BosText = bosText });
        return Tokenizer.Encode(prompt, addSpecial: false, parseSpecial: true);
    }

    /// <summary>Tokenizes plain text, adding BOS/EOS as the model's metadata says.</summary>
    public IReadOnlyList<int> TokenizeRaw(string text) => Tokenizer.Encode(text, addSpecial: true, parseSpecial: true);

    public void Dispose() => Model.Dispose();
}
