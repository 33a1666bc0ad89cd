using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Fathom.Evaluation;
using Fathom.Generation;
using Fathom.Models;

namespace Fathom.Cli.Commands;

/// <summary>
/// <c>fathom perplexity</c>: llama-perplexity's measurement (same chunking, same scored half, same error bars), and
/// with a saved base run, the KL divergence of this model's predictions from the base's — the usual way to judge
/// a quantization.
/// </summary>
public static class PerplexityCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model", "-m") { Description = "The GGUF model (the first part of a split model).", Required = true };
        var file = new Option<string>("--file", "-f") { Description = "The text to score (UTF-8), e.g. wiki.test.raw.", Required = true };
        var context = new Option<int>("--ctx-size", "-c") { Description = "Tokens per chunk; the second half of each is scored (default 512).", DefaultValueFactory = _ => 512 };
        var threads = ThreadsOption.Create();
        var chunks = new Option<int?>("--chunks") { Description = "Score at most N chunks (default: the whole text)." };
        var save = new Option<string?>("--save-logits") { Description = "Save the scored positions' log-probabilities to FILE (a base for --kl-divergence-base)." };
        var klBase = new Option<string?>("--kl-divergence-base") { Description = "Compare with a FILE saved by --save-logits over the same text: KL divergence, same top token." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of the report." };
        var command = new Command("perplexity", "Measure perplexity on a text (as llama-perplexity does), and KL divergence from a saved base run.");
        foreach (Option o in new Option[] { model, file, context, threads, chunks, save, klBase, json }) command.Options.Add(o);
        command.SetAction(r =>
        {
            TextWriter output = r.InvocationConfiguration.Output, error = r.InvocationConfiguration.Error;
            var options = new PerplexityOptions
            {
                ContextSize = r.GetValue(context), MaxChunks = r.GetValue(chunks),
                SaveLogProbabilitiesPath = r.GetValue(save), KlDivergenceBasePath = r.GetValue(klBase),
            };
            return CommandErrors.Guard(error, () =>
            {
                options.Validate();
                string textPath = r.GetRequiredValue(file);
                if (!File.Exists(textPath)) throw new FileNotFoundException($"text file '{textPath}' not found");
                string text = File.ReadAllText(textPath);
                using LoadedModel loaded = LoadedModel.Open(r.GetRequiredValue(model), new ModelOptions { Threads = ThreadsOption.Checked(r.GetValue(threads)) });
                bool asJson = r.GetValue(json);
                Action<PerplexityProgress>? progress = asJson ? null : p =>
                {
                    // Written with the first result, so an input refused up front leaves only its error line.
                    if (p.Chunk == 1)
                        error.WriteLine($"perplexity: {p.ChunkCount} chunks of {options.ContextSize} tokens, scoring {LogProbabilityFile.ScoredPerChunk(options.ContextSize)} per chunk");
                    output.Write(string.Create(CultureInfo.InvariantCulture, $"[{p.Chunk}]{p.RunningPerplexity:F4},"));
                    output.Flush();
                };
                PerplexityResult result = Perplexity.Evaluate(loaded, text, options, progress);
                if (asJson) output.WriteLine(Json(result).ToJsonString(InfoJson.Options));
                else Report(result, output, error);
                return 0;
            });
        });
        return command;
    }

    private static void Report(PerplexityResult r, TextWriter output, TextWriter error)
    {
        var c = CultureInfo.InvariantCulture;
        output.WriteLine();
        output.WriteLine(string.Create(c, $"Final estimate: PPL = {r.Perplexity:F4} +/- {r.PerplexityError:F5}"));
        if (r.KlDivergence is { } k)
        {
            output.WriteLine(string.Create(c, $"Base PPL:         {k.BasePerplexity:F4} +/- {k.BasePerplexityError:F5}"));
            output.WriteLine(string.Create(c, $"Mean    KLD:  {k.Mean,10:F6} ± {k.MeanError:F6}"));
            output.WriteLine(string.Create(c, $"Maximum KLD:  {k.Maximum,10:F6}"));
            output.WriteLine(string.Create(c, $"99.9%   KLD:  {k.Percentile99_9,10:F6}"));
            output.WriteLine(string.Create(c, $"99.0%   KLD:  {k.Percentile99,10:F6}"));
            output.WriteLine(string.Create(c, $"90.0%   KLD:  {k.Percentile90,10:F6}"));
            output.WriteLine(string.Create(c, $"Median  KLD:  {k.Median,10:F6}"));
            output.WriteLine(string.Create(c, $"10.0%   KLD:  {k.Percentile10,10:F6}"));
            output.WriteLine(string.Create(c, $" 1.0%   KLD:  {k.Percentile1,10:F6}"));
            output.WriteLine(string.Create(c, $"Minimum KLD:  {k.Minimum,10:F6}"));
            output.WriteLine(string.Create(c, $"Mean    Δp:   {k.MeanDeltaProbabilityPercent,8:F3} ± {k.MeanDeltaProbabilityPercentError:F3} %"));
            output.WriteLine(string.Create(c, $"RMS     Δp:   {k.RmsDeltaProbabilityPercent,8:F3} %"));
            output.WriteLine(string.Create(c, $"Same top p:   {k.SameTopPercent,8:F3} ± {k.SameTopPercentError:F3} %"));
        }
        error.WriteLine(string.Create(c, $"[{r.ScoredTokens} tokens scored in {r.ChunkCount} chunks, {r.Elapsed.TotalSeconds:F1} s, {r.ChunkCount * r.ContextSize / Math.Max(r.Elapsed.TotalSeconds, 1e-9):F1} t/s]"));
    }

    private static JsonObject Json(PerplexityResult r) => new()
    {
        ["contextSize"] = r.ContextSize,
        ["chunks"] = r.ChunkCount,
        ["scoredTokens"] = r.ScoredTokens,
        ["meanNll"] = r.MeanNegativeLogLikelihood,
        ["perplexity"] = r.Perplexity,
        ["perplexityError"] = r.PerplexityError,
        ["chunkPerplexities"] = new JsonArray([.. r.ChunkPerplexities.Select(p => (JsonNode)p)]),
        ["seconds"] = r.Elapsed.TotalSeconds,
        ["klDivergence"] = r.KlDivergence is { } k ? new JsonObject
        {
            ["tokens"] = k.Tokens,
            ["basePerplexity"] = k.BasePerplexity,
            ["basePerplexityError"] = k.BasePerplexityError,
            ["mean"] = k.Mean,
            ["meanError"] = k.MeanError,
            ["maximum"] = k.Maximum,
            ["p99_9"] = k.Percentile99_9,
            ["p99"] = k.Percentile99,
            ["p90"] = k.Percentile90,
            ["median"] = k.Median,
            ["p10"] = k.Percentile10,
            ["p1"] = k.Percentile1,
            ["minimum"] = k.Minimum,
            ["sameTopPercent"] = k.SameTopPercent,
            ["sameTopPercentError"] = k.SameTopPercentError,
            ["meanDeltaProbabilityPercent"] = k.MeanDeltaProbabilityPercent,
            ["meanDeltaProbabilityPercentError"] = k.MeanDeltaProbabilityPercentError,
            ["rmsDeltaProbabilityPercent"] = k.RmsDeltaProbabilityPercent,
        } : null,
    };
}
