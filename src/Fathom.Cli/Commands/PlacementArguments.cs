using System.CommandLine;
using Fathom.Cuda;
using Fathom.Models;
using Fathom.Models.Placement;

namespace Fathom.Cli.Commands;

/// <summary>
/// The hybrid CPU+GPU placement options, as llama.cpp spells them: <c>-ngl</c>, <c>--cpu-moe</c>, <c>--n-cpu-moe</c>,
/// <c>--override-tensor</c>/<c>-ot</c>, plus <c>--fit</c> and <c>--fit-target</c>. Any of them computes on the GPU
/// (it implies <c>--gpu</c>).
/// </summary>
public sealed class PlacementArguments
{
    public Option<int?> GpuLayers { get; } = new("--n-gpu-layers", "-ngl", "--gpu-layers")
    {
        Description = "Layers on the GPU, counted back from the output layer as llama.cpp does (1: the output layer alone; the block count + 1, or more: all); the other layers' products run on the CPU.",
    };

    public Option<bool> CpuMoe { get; } = new("--cpu-moe", "-cmoe") { Description = "Keep every block's routed experts on the CPU." };
    public Option<int> CpuMoeLayers { get; } = new("--n-cpu-moe", "-ncmoe") { Description = "Keep the routed experts of the first N blocks on the CPU." };

    public Option<string[]> Overrides { get; } = new("--override-tensor", "-ot")
    {
        Description = "REGEX=cpu|cuda0[,...]: tensors whose name contains a match go to that device; the first matching rule wins, before the other options (repeatable).",
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<bool> Fit { get; } = new("--fit") { Description = "Place the weights for the GPU memory actually free: attention, shared experts, dense layers, output and KV cache first, routed experts on the CPU as needed." };

    public Option<int> FitTarget { get; } = new("--fit-target", "-fitt")
    {
        Description = "MiB that --fit leaves free on the GPU besides the KV cache and scratch (default 1024).",
        DefaultValueFactory = _ => 1024,
    };

    public void AddTo(Command command)
    {
        foreach (Option option in new Option[] { GpuLayers, CpuMoe, CpuMoeLayers, Overrides, Fit, FitTarget })
            command.Options.Add(option);
    }

    /// <summary>Whether any placement option was given (then the model computes on the GPU).</summary>
    public bool Given(ParseResult r) =>
        r.GetValue(GpuLayers) is not null || r.GetValue(CpuMoe) || r.GetValue(CpuMoeLayers) != 0 || (r.GetValue(Overrides)?.Length ?? 0) > 0 || r.GetValue(Fit);

    /// <summary>The options for a session of <paramref name="contextSize"/> tokens; ArgumentException names a bad value.</summary>
    public PlacementOptions Options(ParseResult r, int contextSize)
    {
        int target = r.GetValue(FitTarget);
        if (target < 0) throw new ArgumentException($"--fit-target takes 0 or more MiB, not {target}");
        var options = new PlacementOptions
        {
            GpuLayers = r.GetValue(GpuLayers),
            CpuMoe = r.GetValue(CpuMoe),
            CpuMoeLayers = r.GetValue(CpuMoeLayers),
            Overrides = [.. (r.GetValue(Overrides) ?? []).SelectMany(TensorOverride.ParseList)],
            Fit = r.GetValue(Fit),
            FitTargetBytes = (long)target << 20,
            ContextSize = Math.Max(1, contextSize),
        };
        options.Validate();
        return options;
    }

    /// <summary><paramref name="options"/> on the GPU with the placement given on the command line.</summary>
    public ModelOptions OnGpu(ParseResult r, ModelOptions options, int contextSize) => options.OnGpu(Options(r, contextSize));

    /// <summary>Prints where the weights went (to <paramref name="log"/>), when the model computes on the GPU.</summary>
    public static void Report(Model model, TextWriter log)
    {
        if (model.Backend is CudaBackend { Placement: { } plan }) log.WriteLine(plan.Describe());
    }
}
