using System.CommandLine;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.Json.Nodes;
using Fathom.Cuda;
using Fathom.Cuda.Discovery;
using Fathom.Evaluation;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Placement;
using Fathom.Models.Synthesis;
using Spectre.Console;

namespace Fathom.Cli.Commands;

/// <summary>
/// <c>fathom bench</c>: llama-bench's pp and tg tests on the CPU engine, for a GGUF file (<c>-m</c>), or for a
/// random-weight model with a real model's shapes and types (<c>--like PRESET</c> or <c>--like MODEL.gguf</c>, of which
/// only the header is read). Synthetic models are cached (<see cref="SyntheticModelCache"/>); when one does not fit in
/// memory, fewer layers are built and the result is scaled to the whole model and labelled as such.
/// </summary>
public static class BenchCommand
{
    /// <summary>The small preset for a quick look; the real-model presets are <see cref="RealModelPresets.All"/>.</summary>
    public const string TinyPreset = "tiny-deepseek-r1";

    /// <summary>Every name <c>--like</c> accepts besides a file.</summary>
    public static IEnumerable<string> PresetNames => RealModelPresets.All.Select(p => p.Name).Prepend(TinyPreset);

    /// <summary>What the command was asked to do, beyond the benchmark's own options.</summary>
    public sealed record Request
    {
        public string? ModelPath { get; init; }
        public string? Like { get; init; }
        public int Threads { get; init; } = Environment.ProcessorCount;
        public bool Json { get; init; }
        /// <summary>null or "measure": measure the read bandwidth; else GB/s.</summary>
        public string? Bandwidth { get; init; }
        /// <summary>Memory budget for a synthetic model in GB (10⁹ bytes); null: available memory minus a margin.</summary>
        public double? MaxMemoryGB { get; init; }
        public bool ListPresets { get; init; }
        /// <summary>Compute on the first NVIDIA GPU through CUDA.</summary>
        public bool Gpu { get; init; }
        /// <summary>Where the weights go on the GPU (<c>-ngl</c>, <c>--cpu-moe</c>, <c>--fit</c>, ...); null: all on the GPU.</summary>
        public PlacementOptions? Placement { get; init; }
    }

    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m") { Description = "The GGUF model (the first part of a split model)." };
        var like = new Option<string?>("--like")
        {
            Description = $"Benchmark a random-weight model with the shapes and types of a preset or of a GGUF file (only its header is read). Presets: {string.Join(", ", PresetNames)}; sizes: --list-presets.",
        };
        var listPresets = new Option<bool>("--list-presets") { Description = "List the --like presets with their full sizes and exit." };
        var prompt = new Option<int>("--n-prompt", "-p") { Description = "Prompt tokens of the prompt-processing test (default 512).", DefaultValueFactory = _ => 512 };
        var ubatch = new Option<int>("--ubatch-size", "-ub")
        {
            Description = "The most tokens of one forward pass (default 512, as llama-bench's -ub): longer prompts and depths go in passes of this many.",
            DefaultValueFactory = _ => DeviceMemoryReserve.PromptBatch,
        };
        var generate = new Option<int>("--n-gen", "-n") { Description = "Tokens generated one at a time (default 128).", DefaultValueFactory = _ => 128 };
        var threads = ThreadsOption.Create();
        var depth = new Option<int>("--depth", "-d")
        {
            Description = "Tokens of context the generation test starts from, fed as a prompt first (default 8): decode speed at that cache length.",
            DefaultValueFactory = _ => 8,
        };
        var repetitions = new Option<int>("--repetitions", "-r") { Description = "Timed repetitions of each test, after one warm-up (default 3).", DefaultValueFactory = _ => 3 };
        var bandwidth = new Option<string?>("--bandwidth")
        {
            Description = "Memory read bandwidth in GB/s for the generation roofline, or 'measure' (the default: measured with the same threads, or on the GPU with --gpu).",
        };
        var maxMemory = new Option<double?>("--max-memory") { Description = "Memory (GB) a synthetic model may use; default: available memory minus a margin. Fewer layers are built beyond it." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of a table." };
        var gpu = new Option<bool>("--gpu") { Description = "Compute on the first NVIDIA GPU through CUDA." };
        var gpuKernels = new Option<bool>("--gpu-kernels")
        {
            Description = "Instead of a model: time each weight type's one-token product kernels on the GPU, float against integer (GB/s and fraction of the read bandwidth).",
        };
        var placement = new PlacementArguments();
        var command = new Command("bench", "Measure prompt-processing and generation speed (tokens/s) and memory.");
        foreach (Option o in new Option[] { model, like, listPresets, prompt, ubatch, generate, depth, threads, repetitions, bandwidth, maxMemory, json, gpu, gpuKernels }) command.Options.Add(o);
        placement.AddTo(command);
        command.SetAction(r =>
        {
            if (r.GetValue(gpuKernels)) return GpuKernelBench.Run(r.GetValue(json), r.InvocationConfiguration.Output, r.InvocationConfiguration.Error);
            PlacementOptions? placed = null;
            if (placement.Given(r))
            {
                try
                {
                    placed = placement.Options(r, Math.Max(r.GetValue(prompt), r.GetValue(depth)) + r.GetValue(generate));
                }
                catch (ArgumentException e)
                {
                    r.InvocationConfiguration.Error.WriteLine($"error: {e.Message}");
                    return 2;
                }
            }
            return Run(
                new Request
                {
                    ModelPath = r.GetValue(model), Like = r.GetValue(like), Threads = r.GetValue(threads), Json = r.GetValue(json),
                    Bandwidth = r.GetValue(bandwidth), MaxMemoryGB = r.GetValue(maxMemory), ListPresets = r.GetValue(listPresets),
                    Gpu = r.GetValue(gpu) || placed is not null, Placement = placed,
                },
                new BenchmarkOptions
                {
                    PromptTokens = r.GetValue(prompt), GeneratedTokens = r.GetValue(generate), GenerationPromptTokens = r.GetValue(depth),
                    Repetitions = r.GetValue(repetitions), PromptBatchSize = r.GetValue(ubatch),
                },
                r.InvocationConfiguration.Output, r.InvocationConfiguration.Error);
        });
        return command;
    }

    public static int Run(Request request, BenchmarkOptions options, TextWriter output, TextWriter error)
    {
        if (request.ListPresets)
        {
            WritePresets(output);
            return 0;
        }
        if ((request.ModelPath is null) == (request.Like is null))
        {
            error.WriteLine("error: give exactly one of --model/-m and --like");
            return 2;
        }
        if (request.Threads < 1)
        {
            error.WriteLine($"error: the thread count must be at least 1, not {request.Threads}");
            return 2;
        }
        bool measureBandwidth = request.Bandwidth is null || request.Bandwidth.Equals("measure", StringComparison.OrdinalIgnoreCase);
        double? givenBandwidth = null;
        if (!measureBandwidth)
        {
            if (!double.TryParse(request.Bandwidth, NumberStyles.Float, CultureInfo.InvariantCulture, out double gbps) || !(gbps > 0) || !double.IsFinite(gbps))
            {
                error.WriteLine($"error: --bandwidth takes a positive number of GB/s or 'measure', not '{request.Bandwidth}'");
                return 2;
            }
            givenBandwidth = gbps;
        }
        if (request.MaxMemoryGB is double max && !(max > 0 && double.IsFinite(max)))
        {
            error.WriteLine($"error: --max-memory takes a positive number of GB, not {max}");
            return 2;
        }
        ModelBlueprint? blueprint = null;
        if (request.Like is string like && !TryResolve(like, out blueprint))
        {
            error.WriteLine($"error: unknown preset '{like}' and no such file; presets: {string.Join(", ", PresetNames)}");
            return 2;
        }

        try
        {
            return CommandErrors.Guard(error, () =>
            {
                options.Validate(int.MaxValue);
                SyntheticBuildPlan? plan = null;
                WeightFill fill = WeightFill.Tiled;
                long available = SystemMemory.AvailableBytes(), total = SystemMemory.TotalBytes();
                string path;
                if (blueprint is null)
                {
                    path = request.ModelPath!;
                }
                else
                {
                    long budget = request.MaxMemoryGB is double gb ? (long)Math.Min(gb * 1e9, long.MaxValue)
                        : request.Gpu ? SyntheticBuildPlan.GpuBudget(GpuFreeBytes())
                        : SyntheticBuildPlan.DefaultBudget(available);
                    plan = SyntheticBuildPlan.Choose(blueprint, budget);
                    // A GPU may hold more than the host can cache or store: then the routed experts stay file holes.
                    fill = request.Gpu && plan.Built.ByteSize > SyntheticBuildPlan.DefaultBudget(available) ? WeightFill.ZeroExperts : WeightFill.Tiled;
                    path = Synthesize(plan, fill, error);
                }

                var modelOptions = new ModelOptions { Threads = request.Threads };
                // On the GPU a placement is always planned (all on the GPU by default), so a model too large fails with the numbers.
                PlacementOptions placement = (request.Placement ?? new PlacementOptions()) with { ContextSize = options.ContextTokens ?? (int)options.TokensNeeded };
                using Model model = ModelLoader.Load(path, request.Gpu ? modelOptions.OnGpu(placement) : modelOptions);
                // The roofline is against the memory the weights are read from: the GPU's on a GPU run, the host's RAM otherwise.
                double? bandwidth = givenBandwidth ?? (model.Backend is CudaBackend device ? device.MeasureReadBandwidth() : MemoryBandwidth.Measure(request.Threads));
                BenchmarkResult measured = Benchmark.Run(model, options with { BandwidthGBps = bandwidth });
                BenchmarkResult result = plan is null ? measured : plan.Scale(measured);
                string compute = model.Backend is CudaBackend cuda ? $"CUDA on {cuda.Device.Name}" : $"{request.Threads} thread(s)";
                var report = new Report(result, measured, plan, Label(request), request.Threads, compute, model.Backend is CudaBackend, measureBandwidth, available, total)
                {
                    Placement = (model.Backend as CudaBackend)?.Placement,
                };
                if (request.Json) output.WriteLine(Json(report).ToJsonString(InfoJson.Options));
                else WriteTable(report, model.Config.Architecture.ToString(), output);
                return 0;
            });
        }
        catch (InsufficientMemoryException e)
        {
            error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    /// <summary>A preset's or a GGUF header's blueprint.</summary>
    private static bool TryResolve(string like, [NotNullWhen(true)] out ModelBlueprint? blueprint)
    {
        blueprint = null;
        if (like == TinyPreset)
        {
            blueprint = ModelBlueprint.FromSpec(SyntheticPresets.TinyDeepSeekR1);
            return true;
        }
        if (RealModelPresets.TryGet(like, out RealModelPreset preset))
        {
            blueprint = preset.Blueprint();
            return true;
        }
        if (!File.Exists(like)) return false;
        using GgufFile file = GgufFile.Open(like);
        blueprint = ModelBlueprint.FromGgufHeader(file);
        return true;
    }

    private static string Label(Request request) =>
        request.ModelPath ?? (File.Exists(request.Like) ? $"{Path.GetFileName(request.Like)} (synthetic copy)" : $"{request.Like} (synthetic)");

    private static string Synthesize(SyntheticBuildPlan plan, WeightFill fill, TextWriter log)
    {
        if (SyntheticModelCache.Contains(plan.Built, fill)) return SyntheticModelCache.GetOrCreate(plan.Built, fill);
        string holes = fill == WeightFill.ZeroExperts ? "; routed experts left as zero-filled file holes" : "";
        log.WriteLine($"synthesizing {ByteSizes.Format(plan.Built.ByteSize)} ({plan.BuiltLayers} of {plan.TotalLayers} layers{holes}) into {SyntheticModelCache.DefaultDirectory} ...");
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        string path = SyntheticModelCache.GetOrCreate(plan.Built, fill);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"synthesized in {System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds:F1} s: {path}"));
        return path;
    }

    /// <summary>Free memory of GPU 0, or an error naming why CUDA is not usable.</summary>
    private static long GpuFreeBytes()
    {
        CudaEnvironment environment = CudaEnvironment.Detect();
        if (environment.Gpus.FirstOrDefault(g => g.Error is null) is not GpuReport gpu)
            throw new Fathom.Cuda.Driver.CudaException($"--gpu: CUDA is not usable: {environment.Problem}");
        return gpu.FreeBytes;
    }

    private static void WritePresets(TextWriter output)
    {
        output.WriteLine("Presets for --like (full size = every tensor's bytes, as the file would be):");
        output.WriteLine($"  {TinyPreset,-30} {ByteSizes.Format(ModelBlueprint.FromSpec(SyntheticPresets.TinyDeepSeekR1).ByteSize),12}  a tiny model with DeepSeek-R1's architecture and 1.58-bit mix");
        foreach (RealModelPreset p in RealModelPresets.All)
        {
            ModelBlueprint b = p.Blueprint();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {p.Name,-30} {ByteSizes.Format(b.ByteSize),12}  {b.Layers} layers; {p.Description}"));
        }
    }

    /// <summary>Everything the table and JSON show.</summary>
    internal sealed record Report(BenchmarkResult Result, BenchmarkResult Measured, SyntheticBuildPlan? Plan, string Model, int Threads, string Compute, bool Gpu,
        bool BandwidthMeasured, long AvailableMemoryBytes, long TotalMemoryBytes)
    {
        /// <summary>Where the weights were on the GPU run; null on the CPU.</summary>
        public PlacementPlan? Placement { get; init; }

        public bool FitsInMemory => Plan is null || Plan.Full.ByteSize <= SyntheticBuildPlan.DefaultBudget(TotalMemoryBytes);
        public bool FitsInMemoryBudget => Plan is null || !Plan.IsScaled;
    }

    internal static JsonObject Json(Report report)
    {
        BenchmarkResult r = report.Result;
        SyntheticBuildPlan? plan = report.Plan;
        return new JsonObject
        {
            ["model"] = report.Model,
            ["threads"] = report.Threads,
            ["backend"] = report.Gpu ? "cuda" : "cpu",
            ["n_prompt"] = r.Options.PromptTokens,
            ["n_gen"] = r.Options.GeneratedTokens,
            ["n_depth"] = r.Options.GenerationPromptTokens,
            ["n_ubatch"] = r.Options.PromptBatchSize,
            ["repetitions"] = r.Options.Repetitions,
            ["pp_tokens_per_second"] = r.PromptProcessing.Median,
            ["pp_tokens_per_second_min"] = r.PromptProcessing.Min,
            ["pp_tokens_per_second_max"] = r.PromptProcessing.Max,
            ["tg_tokens_per_second"] = r.Generation.Median,
            ["tg_tokens_per_second_min"] = r.Generation.Min,
            ["tg_tokens_per_second_max"] = r.Generation.Max,
            ["weight_bytes_per_token"] = r.WeightBytesPerToken,
            ["mapped_weight_bytes"] = r.MappedWeightBytes,
            ["kv_cache_bytes"] = r.KvCacheBytes,
            ["peak_working_set_bytes"] = r.PeakWorkingSetBytes,
            ["working_set_bytes"] = r.WorkingSetBytes,
            ["gc_heap_size_bytes"] = r.GcHeapSizeBytes,
            ["bandwidth_gbps"] = r.Options.BandwidthGBps,
            ["bandwidth_source"] = r.Options.BandwidthGBps is null ? "none" : report.BandwidthMeasured ? "measured" : "given",
            ["roofline_fraction"] = r.RooflineFraction,
            ["synthetic"] = plan is not null,
            ["total_layers"] = plan?.TotalLayers,
            ["built_layers"] = plan?.BuiltLayers,
            // The layer count the figures were scaled from; null when they are measured on the whole model.
            ["scaled_from_layers"] = plan is { IsScaled: true } ? plan.BuiltLayers : null,
            ["tg_time_scale"] = plan is { IsScaled: true } ? plan.TimeScale : null,
            ["pp_time_scale"] = plan is { IsScaled: true } ? plan.PromptTimeScale : null,
            ["measured_pp_tokens_per_second"] = report.Measured.PromptProcessing.Median,
            ["measured_tg_tokens_per_second"] = report.Measured.Generation.Median,
            ["full_model_bytes"] = plan?.Full.ByteSize ?? r.MappedWeightBytes,
            ["built_model_bytes"] = plan?.Built.ByteSize,
            ["memory_available_bytes"] = report.AvailableMemoryBytes,
            ["memory_total_bytes"] = report.TotalMemoryBytes,
            ["fits_in_memory"] = report.FitsInMemory,
            ["fits_in_memory_budget"] = report.FitsInMemoryBudget,
            ["placement"] = report.Placement is { } placement ? PlacementJson(placement) : null,
        };
    }

    /// <summary>The placement of a GPU run: how it was chosen, bytes per part on each device, and the GPU's reserve.</summary>
    internal static JsonObject PlacementJson(PlacementPlan plan) => new()
    {
        ["choice"] = plan.Choice,
        ["gpu_weight_bytes"] = plan.GpuWeightBytes,
        ["cpu_weight_bytes"] = plan.CpuWeightBytes,
        ["kv_cache_bytes"] = plan.Reserve.KvCacheBytes,
        ["scratch_bytes"] = plan.Reserve.ScratchBytes,
        ["streaming_bytes"] = plan.Reserve.StreamingBytes,
        ["gpu_free_bytes"] = plan.FreeBytes,
        ["cpu_tensors"] = plan.Tensors.Count(t => t.Device == PlacementDevice.Cpu),
        ["parts"] = new JsonArray([.. plan.Parts.Select(p => (JsonNode)new JsonObject
        {
            ["group"] = p.Group.ToString(), ["gpu_bytes"] = p.GpuBytes, ["cpu_bytes"] = p.CpuBytes,
        })]),
    };

    private static void WriteTable(Report report, string architecture, TextWriter output)
    {
        BenchmarkResult r = report.Result;
        SyntheticBuildPlan? plan = report.Plan;
        IAnsiConsole console = ReportTables.Console(output);

        console.Write(new Rule(Markup.Escape($"{report.Model} — {architecture}, {report.Compute}, {r.Options.Repetitions} repetition(s) after a warm-up")).LeftJustified());
        string scaledNote = plan is { IsScaled: true }
            ? string.Create(CultureInfo.InvariantCulture, $"SCALED: built {plan.BuiltLayers} of {plan.TotalLayers} layers; per-layer time scaled (tg ×{plan.TimeScale:F2}, pp ×{plan.PromptTimeScale:F2} per token)")
            : "";
        var speed = ReportTables.New(plan is { IsScaled: true } ? $"Speed ({scaledNote})" : "Speed", "Test", "Median t/s", "Min t/s", "Max t/s");
        ReportTables.Row(speed, $"pp{r.Options.PromptTokens}", Rate(r.PromptProcessing.Median), Rate(r.PromptProcessing.Min), Rate(r.PromptProcessing.Max));
        ReportTables.Row(speed, r.Options.GenerationPromptTokens == new BenchmarkOptions().GenerationPromptTokens ? $"tg{r.Options.GeneratedTokens}" : $"tg{r.Options.GeneratedTokens} @ d{r.Options.GenerationPromptTokens}", Rate(r.Generation.Median), Rate(r.Generation.Min), Rate(r.Generation.Max));
        console.Write(speed);
        if (plan is { IsScaled: true })
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{scaledNote}. Measured on the {plan.BuiltLayers}-layer model: pp {report.Measured.PromptProcessing.Median:F2} t/s, tg {report.Measured.Generation.Median:F2} t/s."));

        var memory = ReportTables.New("Memory", "Measure", "Value");
        ReportTables.Row(memory, "Weight bytes read per generated token (estimate)", Bytes(r.WeightBytesPerToken));
        if (r.RooflineFraction is double roofline)
            ReportTables.Row(memory, $"Generation roofline at {r.Options.BandwidthGBps!.Value.ToString("0.#", CultureInfo.InvariantCulture)} GB/s ({(report.BandwidthMeasured ? "measured" : "given")})",
                roofline.ToString("P1", CultureInfo.InvariantCulture));
        if (plan is not null)
        {
            ReportTables.Row(memory, "Full model (every tensor)", Bytes(plan.Full.ByteSize));
            ReportTables.Row(memory, $"Built synthetic model ({plan.BuiltLayers} of {plan.TotalLayers} layers)", Bytes(plan.Built.ByteSize));
            ReportTables.Row(memory, "Fits this machine's memory (installed, less a margin)",
                $"{(report.FitsInMemory ? "yes" : "no")}: {ByteSizes.Format(plan.Full.ByteSize)} of {ByteSizes.Format(report.TotalMemoryBytes)} installed, {ByteSizes.Format(report.AvailableMemoryBytes)} available");
        }
        else
        {
            ReportTables.Row(memory, "Mapped weights (whole file)", Bytes(r.MappedWeightBytes));
        }
        ReportTables.Row(memory, $"KV cache of one session ({r.Options.TokensNeeded} tokens)", Bytes(r.KvCacheBytes));
        ReportTables.Row(memory, "Peak working set (touched weight pages included)", Bytes(r.PeakWorkingSetBytes));
        ReportTables.Row(memory, "Working set after the run (touched weight pages included)", Bytes(r.WorkingSetBytes));
        ReportTables.Row(memory, "Managed (GC) heap after the last collection", Bytes(r.GcHeapSizeBytes));
        console.Write(memory);
        if (report.Placement is { } placement) output.WriteLine(placement.Describe());
    }

    private static string Rate(double tokensPerSecond) => tokensPerSecond.ToString("F2", CultureInfo.InvariantCulture);

    /// <summary>Binary units, and the exact count beside them once there is a unit to round.</summary>
    private static string Bytes(long n) =>
        n < 1024 ? ByteSizes.Format(n) : string.Create(CultureInfo.InvariantCulture, $"{ByteSizes.Format(n)} ({n:N0} B)");
}
