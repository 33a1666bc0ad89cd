using System.CommandLine;
using Fathom.Gguf;
using Fathom.Models;

namespace Fathom.Cli.Commands;

/// <summary><c>fathom info MODEL.gguf [--json]</c>: what a model file holds, for people or for scripts.</summary>
public static class InfoCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The GGUF file, or the first part (…-00001-of-0000N.gguf) of a split model." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of tables." };
        var command = new Command("info", "Show a GGUF model's files, architecture, hyperparameters, tokenizer and tensors.");
        command.Arguments.Add(model);
        command.Options.Add(json);
        command.SetAction(result => Run(result.GetRequiredValue(model), result.GetValue(json), result.InvocationConfiguration.Output, result.InvocationConfiguration.Error));
        return command;
    }

    /// <summary>Exit codes: 0 success, 1 the file cannot be opened, 2 the file is not a valid GGUF model.</summary>
    public static int Run(string path, bool json, TextWriter output, TextWriter error)
    {
        ModelSummary summary;
        try
        {
            using GgufFile file = GgufFile.Open(path);
            summary = ModelSummary.FromFile(file);
        }
        catch (GgufFormatException e)
        {
            error.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"error: cannot open {path}: {e.Message}");
            return 1;
        }

        if (json) output.WriteLine(InfoJson.Build(summary).ToJsonString(InfoJson.Options));
        else InfoReport.Write(summary, output);
        return 0;
    }
}
