using System.CommandLine;
using System.Diagnostics;
using Fathom.Generation;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Tokenization;

namespace Fathom.Cli.Commands;

/// <summary>
/// <c>fathom demo</c>: the whole pipeline on a fresh machine with no download. Fathom synthesizes a tiny model
/// with DeepSeek-R1's architecture and 1.58-bit weight mix, writes it as a split GGUF, inspects it, then chats
/// with it (random weights, so the words are nonsense; the point is every stage running, and its speed).
/// </summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var tokens = new Option<int>("--n-predict", "-n") { Description = "Tokens to generate (default 48).", DefaultValueFactory = _ => 48 };
        var threads = ThreadsOption.Create();
        var keep = new Option<string?>("--keep") { Description = "Write the synthesized model into this folder and keep it." };
        var command = new Command("demo", "Synthesize a tiny DeepSeek-R1-shaped model and run the whole pipeline on it.");
        command.Options.Add(tokens);
        command.Options.Add(threads);
        command.Options.Add(keep);
        command.SetAction(r => Run(r.GetValue(tokens), r.GetValue(threads), r.GetValue(keep),
            r.InvocationConfiguration.Output, r.InvocationConfiguration.Error));
        return command;
    }

    public static int Run(int maxTokens, int threads, string? keepFolder, TextWriter output, TextWriter error)
    {
        string folder = keepFolder ?? Path.Combine(Path.GetTempPath(), $"fathom-demo-{Environment.ProcessId}");
        Directory.CreateDirectory(folder);
        try
        {
            return CommandErrors.Guard(error, () =>
            {
                ThreadsOption.Checked(threads);
                SyntheticModelSpec spec = SyntheticPresets.TinyDeepSeekR1;
                output.WriteLine($"1. Synthesizing '{spec.Name}': deepseek2 (MLA + MoE, {spec.Experts} experts, {spec.ExpertsUsed} used), {spec.Layers} layers,");
                output.WriteLine("   routed experts IQ1_S / down projections IQ2_XXS, attention Q4_K, shared experts and output Q6_K ...");
                var clock = Stopwatch.StartNew();
                IReadOnlyList<string> parts = ModelSynthesizer.Build(spec).WriteSplit(Path.Combine(folder, "tiny-r1"), maxTensorsPerPart: 24);
                output.WriteLine($"   wrote {parts.Count} split parts in {clock.Elapsed.TotalSeconds:F1} s: {Path.GetFileName(parts[0])} ...");

                output.WriteLine();
                output.WriteLine("2. fathom info (first part opens all parts):");
                int info = InfoCommand.Run(parts[0], json: false, output, error);
                if (info != 0) return info;

                output.WriteLine();
                output.WriteLine($"3. Loading the model with {threads} thread(s) and chatting (greedy, {maxTokens} tokens):");
                using LoadedModel model = LoadedModel.Open(parts[0], new ModelOptions { Threads = threads });
                var question = ChatMessage.User("Why is the sky blue?");
                // The synthetic file carries no chat template; use DeepSeek-R1's, which opens <think> for the model.
                ChatTemplate template = ChatTemplates.ForFamily(ChatTemplateFamily.DeepSeekR1);
                IReadOnlyList<int> prompt = model.TokenizeChat([question], template: template);
                output.WriteLine($"   chat template: {template.Family} (opens <think>: {template.OpensThinking}); prompt: {prompt.Count} tokens");
                var console = new StreamingConsole(output, showReasoning: true);
                output.Write("   ");
                GenerationResult result = model.Generator.Generate(model.CreateSession(512), prompt,
                    new GenerationOptions { MaxTokens = maxTokens, Sampling = SamplingOptions.Greedy, StartsInReasoning = template.OpensThinking },
                    console.Write);
                console.End();
                output.WriteLine($"   {GenerateCommand.Timing(result)}");
                output.WriteLine("   (Random weights: the text is noise. Point fathom run -m at a real GGUF for answers.)");
                if (keepFolder is not null) output.WriteLine($"Model kept in {folder}");
                return 0;
            });
        }
        finally
        {
            if (keepFolder is null) Directory.Delete(folder, recursive: true);
        }
    }
}
