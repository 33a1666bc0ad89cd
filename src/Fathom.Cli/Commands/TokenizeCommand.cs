using System.CommandLine;
using System.Text.Json.Nodes;
using Fathom.Gguf;
using Fathom.Tokenization;

namespace Fathom.Cli.Commands;

/// <summary><c>fathom tokenize MODEL "text" [--json]</c>: the ids and pieces a model's tokenizer makes of a text.</summary>
public static class TokenizeCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The GGUF model whose tokenizer to use." };
        var text = new Argument<string>("text") { Description = "The text to tokenize. Special tokens written in it (e.g. <｜User｜>) are recognized." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object: ids and pieces." };
        var noSpecial = new Option<bool>("--no-special") { Description = "Do not add BOS/EOS and treat control-token text as plain text." };
        var command = new Command("tokenize", "Show the token ids and pieces a model's tokenizer makes of a text.");
        command.Arguments.Add(model);
        command.Arguments.Add(text);
        command.Options.Add(json);
        command.Options.Add(noSpecial);
        command.SetAction(r => Run(r.GetRequiredValue(model), r.GetRequiredValue(text), r.GetValue(json), !r.GetValue(noSpecial),
            r.InvocationConfiguration.Output, r.InvocationConfiguration.Error));
        return command;
    }

    /// <summary>Exit codes: 0 success, 1 the file cannot be opened, 2 the file or its tokenizer is invalid or unsupported.</summary>
    public static int Run(string path, string text, bool json, bool special, TextWriter output, TextWriter error)
    {
        return CommandErrors.Guard(error, () =>
        {
            Tokenizer tokenizer;
            using (GgufFile file = GgufFile.Open(path))
                tokenizer = Tokenizer.Create(TokenizerModel.FromGguf(file.Metadata));
            Write(tokenizer, tokenizer.Encode(text, addSpecial: special, parseSpecial: special), json, output);
            return 0;
        });
    }

    private static void Write(Tokenizer tokenizer, IReadOnlyList<int> ids, bool json, TextWriter output)
    {
        if (json)
        {
            var result = new JsonObject
            {
                ["ids"] = new JsonArray([.. ids.Select(id => (JsonNode)id)]),
                ["pieces"] = new JsonArray([.. ids.Select(id => (JsonNode)tokenizer.TokenToPiece(id))]),
                ["count"] = ids.Count,
            };
            output.WriteLine(result.ToJsonString(InfoJson.Options));
            return;
        }

        output.WriteLine($"{ids.Count} tokens");
        foreach (int id in ids)
            output.WriteLine($"{id,8}  {Visible(tokenizer.TokenToPiece(id))}");
    }

    /// <summary>Quotes a piece and escapes control characters so whitespace tokens are visible.</summary>
    private static string Visible(string piece)
    {
        var sb = new System.Text.StringBuilder("'");
        foreach (char c in piece)
        {
            sb.Append(c switch
            {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\'' => "\\'",
                '\\' => "\\\\",
                _ when char.IsControl(c) => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        }
        return sb.Append('\'').ToString();
    }
}
