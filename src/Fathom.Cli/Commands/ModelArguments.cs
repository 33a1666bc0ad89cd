using System.CommandLine;
using Fathom.Cuda;
using Fathom.Generation;
using Fathom.Models;

namespace Fathom.Cli.Commands;

/// <summary>The options every command that loads and runs a model shares: model path, threads, context, sampling.</summary>
public sealed class ModelArguments
{
    public Option<string> Model { get; } = new("--model", "-m") { Description = "The GGUF model (the first part of a split model).", Required = true };
    public Option<int> Threads { get; } = ThreadsOption.Create();
    public Option<int> Context { get; } = new("--ctx-size", "-c") { Description = "Context length in tokens (default 4096, at most the model's).", DefaultValueFactory = _ => 4096 };
    public Option<float> Temperature { get; } = new("--temp") { Description = "Sampling temperature; 0 is greedy (default 0.6, DeepSeek's advice for R1).", DefaultValueFactory = _ => 0.6f };
    public Option<float> TopP { get; } = new("--top-p") { Description = "Nucleus sampling threshold (default 0.95).", DefaultValueFactory = _ => 0.95f };
    public Option<int> TopK { get; } = new("--top-k") { Description = "Keep only the K most likely tokens; 0 disables (default).", DefaultValueFactory = _ => 0 };
    public Option<float> MinP { get; } = new("--min-p") { Description = "Drop tokens less likely than MIN_P × the best; 0 disables (default).", DefaultValueFactory = _ => 0f };
    public Option<float> RepeatPenalty { get; } = new("--repeat-penalty") { Description = "Repetition penalty; 1 disables (default).", DefaultValueFactory = _ => 1f };
    public Option<float> PresencePenalty { get; } = new("--presence-penalty") { Description = "Presence penalty (default 0).", DefaultValueFactory = _ => 0f };
    public Option<float> FrequencyPenalty { get; } = new("--frequency-penalty") { Description = "Frequency penalty (default 0).", DefaultValueFactory = _ => 0f };
    public Option<bool> Gpu { get; } = new("--gpu") { Description = "Compute on the first NVIDIA GPU through CUDA (`fathom doctor` shows what was found)." };
    public Option<ulong?> Seed { get; } = new("--seed", "-s") { Description = "Random seed; the same seed gives the same output (default: random)." };
    public Option<bool> DecompressFusedKvB { get; } = new("--kv-b-decompressed")
    {
        Description = "DeepSeek files with the older fused attn_kv_b: run attention as llama.cpp does for them (keys and values cached per head: "
            + "llama.cpp's logits with F16/BF16 weights, at several times the KV cache). CPU only.",
    };
    public PlacementArguments Placement { get; } = new();

    public void AddTo(Command command)
    {
        foreach (Option option in new Option[] { Model, Threads, Context, Temperature, TopP, TopK, MinP, RepeatPenalty, PresencePenalty, FrequencyPenalty, Seed, Gpu, DecompressFusedKvB })
            command.Options.Add(option);
        Placement.AddTo(command);
    }

    public ModelOptions ModelOptions(ParseResult r)
    {
        var options = new ModelOptions { Threads = ThreadsOption.Checked(r.GetValue(Threads)), DecompressFusedKvB = r.GetValue(DecompressFusedKvB) };
        // On the GPU every load plans a placement (all on the GPU by default), so a model too large fails with the numbers.
        return r.GetValue(Gpu) || Placement.Given(r) ? Placement.OnGpu(r, options, r.GetValue(Context)) : options;
    }

    /// <summary>The sampling options given on the command line; throws ArgumentException naming a bad value.</summary>
    public SamplingOptions Sampling(ParseResult r)
    {
        var options = new SamplingOptions
        {
            Temperature = r.GetValue(Temperature),
            TopP = r.GetValue(TopP),
            TopK = r.GetValue(TopK),
            MinP = r.GetValue(MinP),
            RepetitionPenalty = r.GetValue(RepeatPenalty),
            PresencePenalty = r.GetValue(PresencePenalty),
            FrequencyPenalty = r.GetValue(FrequencyPenalty),
            Seed = r.GetValue(Seed),
        };
        options.Validate();
        return options;
    }
}
