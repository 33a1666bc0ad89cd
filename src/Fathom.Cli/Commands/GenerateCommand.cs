using System.CommandLine;
using System.Text.Json.Nodes;
using Fathom.Generation;
using Fathom.Gguf;
using Fathom.Runtime;
using Fathom.Tokenization;

namespace Fathom.Cli.Commands;

/// <summary>
/// <c>fathom generate</c>: one prompt in, one completion out. The prompt is a chat message (default), plain text
/// (<c>--raw</c>) or exact token ids (<c>--prompt-tokens</c>).
/// </summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var args = new ModelArguments();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "The prompt text (a user message, unless --raw)." };
        var promptTokens = new Option<string?>("--prompt-tokens") { Description = "Comma-separated token ids fed exactly as given." };
        var tokens = new Option<int>("--n-predict", "-n") { Description = "Most tokens to generate (default 256).", DefaultValueFactory = _ => 256 };
        var raw = new Option<bool>("--raw") { Description = "Feed the prompt as plain text: no chat template, BOS as the model's metadata says." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object: prompt ids, generated ids, text, reasoning, timings." };
        var logitsOut = new Option<string?>("--logits-out") { Description = "Write the logits of the last prompt position to FILE as little-endian float32." };
        var stop = new Option<string[]>("--stop") { Description = "Stop before this string (repeatable).", AllowMultipleArgumentsPerToken = false };
        var command = new Command("generate", "Generate a completion for one prompt.");
        args.AddTo(command);
        foreach (Option o in new Option[] { prompt, promptTokens, tokens, raw, json, logitsOut, stop }) command.Options.Add(o);
        command.SetAction(r => Run(r, args, r.GetValue(prompt), r.GetValue(promptTokens), r.GetValue(tokens), r.GetValue(raw),
            r.GetValue(json), r.GetValue(logitsOut), r.GetValue(stop) ?? [], r.InvocationConfiguration.Output, r.InvocationConfiguration.Error));
        return command;
    }

    private static int Run(ParseResult r, ModelArguments args, string? prompt, string? promptTokens, int maxTokens, bool raw, bool json,
        string? logitsOut, string[] stops, TextWriter output, TextWriter error)
    {
        if ((prompt is null) == (promptTokens is null))
        {
            error.WriteLine("error: give exactly one of --prompt/-p and --prompt-tokens");
            return 2;
        }
        return CommandErrors.Guard(error, () =>
        {
            SamplingOptions sampling = args.Sampling(r); // validated before the model is loaded
            using LoadedModel model = LoadedModel.Open(r.GetRequiredValue(args.Model), args.ModelOptions(r));
            PlacementArguments.Report(model.Model, error);
            IReadOnlyList<int> ids;
            bool startsInReasoning = false;
            if (promptTokens is not null) ids = ParseIds(promptTokens);
            else if (raw) ids = model.TokenizeRaw(prompt!);
            else
            {
                ids = model.TokenizeChat([ChatMessage.User(prompt!)]);
                startsInReasoning = model.Template.Template.OpensThinking;
            }

            InferenceSession session = model.CreateSession(r.GetValue(args.Context));
            var options = new GenerationOptions
            {
                MaxTokens = maxTokens, Sampling = sampling, Stop = stops, StartsInReasoning = startsInReasoning,
                KeepPromptLogits = logitsOut is not null,
            };
            var console = new StreamingConsole(output, showReasoning: true);
            GenerationResult result = model.Generator.Generate(session, ids, options, json ? null : console.Write);
            if (!json) console.End();

            if (logitsOut is not null) WriteLogits(logitsOut, result.PromptLogits!);
            if (json) output.WriteLine(Json(result).ToJsonString(InfoJson.Options));
            else error.WriteLine(Timing(result));
            return 0;
        });
    }

    internal static string Timing(GenerationResult r) =>
        $"[{r.PromptTokensEvaluated} prompt tokens at {r.PromptTokensPerSecond:F1} t/s, {r.OutputTokens.Count} generated at {r.GenerationTokensPerSecond:F1} t/s, finish: {r.FinishReason}, seed {r.Seed}]";

    private static IReadOnlyList<int> ParseIds(string text)
    {
        var ids = new List<int>();
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            ids.Add(int.TryParse(part, out int id) && id >= 0 ? id : throw new ArgumentException($"'{part}' in --prompt-tokens is not a token id"));
        return ids.Count > 0 ? ids : throw new ArgumentException("--prompt-tokens has no ids");
    }

    private static void WriteLogits(string path, float[] logits)
    {
        using var stream = File.Create(path);
        using var writer = new BinaryWriter(stream);
        foreach (float v in logits) writer.Write(v); // BinaryWriter is little-endian on every platform
    }

    private static JsonObject Json(GenerationResult r) => new()
    {
        ["promptTokens"] = new JsonArray([.. r.PromptTokens.Select(t => (JsonNode)t)]),
        ["generatedTokens"] = new JsonArray([.. r.OutputTokens.Select(t => (JsonNode)t)]),
        ["text"] = r.Text,
        ["reasoning"] = r.Reasoning,
        ["finishReason"] = r.FinishReason.ToString(),
        ["seed"] = r.Seed,
        ["timings"] = new JsonObject
        {
            ["promptTokensEvaluated"] = r.PromptTokensEvaluated,
            ["promptMilliseconds"] = r.PromptTime.TotalMilliseconds,
            ["promptTokensPerSecond"] = r.PromptTokensPerSecond,
            ["generatedTokens"] = r.OutputTokens.Count,
            ["generationMilliseconds"] = r.GenerationTime.TotalMilliseconds,
            ["generationTokensPerSecond"] = r.GenerationTokensPerSecond,
        },
    };
}
