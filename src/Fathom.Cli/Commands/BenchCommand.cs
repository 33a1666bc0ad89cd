using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Fathom.Cuda;
using Fathom.Evaluation;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Fathom.Cli.Commands;

/// <summary>
/// <c>fathom bench</c>: llama-bench's pp and tg tests on the CPU engine, for a GGUF file (<c>-m</c>) or a synthetic
/// preset (<c>--like</c>) that is written to a temporary file, measured and deleted.
/// </summary>
public static class BenchCommand
{
    /// <summary>The presets <c>--like</c> accepts, by name.</summary>
    public static IReadOnlyDictionary<string, Func<SyntheticModelSpec>> Presets { get; } = new Dictionary<string, Func<SyntheticModelSpec>>
    {
        ["tiny-deepseek-r1"] = () => SyntheticPresets.TinyDeepSeekR1 with { Fill = WeightFill.Tiled },
    };

    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m") { Description = "The GGUF model (the first part of a split model)." };
        var like = new Option<string?>("--like")
        {
            Description = $"Benchmark a synthesized model instead of a file; presets: {string.Join(", ", Presets.Keys)}.",
        };
        var prompt = new Option<int>("--n-prompt", "-p") { Description = "Prompt tokens processed in one batch (default 512).", DefaultValueFactory = _ => 512 };
        var generate = new Option<int>("--n-gen", "-n") { Description = "Tokens generated one at a time (default 128).", DefaultValueFactory = _ => 128 };
        var threads = new Option<int>("--threads", "-t") { Description = "CPU threads (default: all cores).", DefaultValueFactory = _ => Environment.ProcessorCount };
        var repetitions = new Option<int>("--repetitions", "-r") { Description = "Timed repetitions of each test, after one warm-up (default 3).", DefaultValueFactory = _ => 3 };
        var bandwidth = new Option<double?>("--bandwidth") { Description = "Memory bandwidth in GB/s; adds the generation roofline fraction." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of a table." };
        var gpu = new Option<bool>("--gpu") { Description = "Compute on the first NVIDIA GPU through CUDA." };
        var command = new Command("bench", "Measure prompt-processing and generation speed (tokens/s) and memory.");
        foreach (Option o in new Option[] { model, like, prompt, generate, threads, repetitions, bandwidth, json, gpu }) command.Options.Add(o);
        command.SetAction(r => Run(r.GetValue(model), r.GetValue(like),
            new BenchmarkOptions
            {
                PromptTokens = r.GetValue(prompt), GeneratedTokens = r.GetValue(generate),
                Repetitions = r.GetValue(repetitions), BandwidthGBps = r.GetValue(bandwidth),
            },
            r.GetValue(threads), r.GetValue(json), r.InvocationConfiguration.Output, r.InvocationConfiguration.Error, r.GetValue(gpu)));
        return command;
    }

    public static int Run(string? modelPath, string? like, BenchmarkOptions options, int threads, bool json, TextWriter output, TextWriter error, bool gpu = false)
    {
        if ((modelPath is null) == (like is null))
        {
            error.WriteLine("error: give exactly one of --model/-m and --like");
            return 2;
        }
        if (threads < 1)
        {
            error.WriteLine($"error: the thread count must be at least 1, not {threads}");
            return 2;
        }
        Func<SyntheticModelSpec>? preset = null;
        if (like is not null && !Presets.TryGetValue(like, out preset))
        {
            error.WriteLine($"error: unknown preset '{like}'; presets: {string.Join(", ", Presets.Keys)}");
            return 2;
        }

        string? temporary = null;
        try
        {
            return CommandErrors.Guard(error, () =>
            {
                string path = modelPath ?? (temporary = Synthesize(preset!()));
                var modelOptions = new ModelOptions { Threads = threads };
                using Model model = ModelLoader.Load(path, gpu ? modelOptions.OnGpu() : modelOptions);
                BenchmarkResult result = Benchmark.Run(model, options);
                string label = like is null ? path : $"{like} (synthetic)";
                if (json) output.WriteLine(Json(result, label, threads, model.Backend is CudaBackend).ToJsonString(InfoJson.Options));
                string compute = model.Backend is CudaBackend cuda ? $"CUDA on {cuda.Device.Name}" : $"{threads} thread(s)";
                if (!json) WriteTable(result, label, model.Config.Architecture.ToString(), compute, output);
                return 0;
            });
        }
        finally
        {
            if (temporary is not null) File.Delete(temporary);
        }
    }

    private static string Synthesize(SyntheticModelSpec spec)
    {
        string path = Path.Combine(Path.GetTempPath(), $"fathom-bench-{Environment.ProcessId}-{Guid.NewGuid():N}.gguf");
        ModelSynthesizer.Build(spec).WriteTo(path);
        return path;
    }

    internal static JsonObject Json(BenchmarkResult r, string model, int threads, bool gpu = false) => new()
    {
        ["model"] = model,
        ["threads"] = threads,
        ["backend"] = gpu ? "cuda" : "cpu",
        ["n_prompt"] = r.Options.PromptTokens,
        ["n_gen"] = r.Options.GeneratedTokens,
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
        ["roofline_fraction"] = r.RooflineFraction,
    };

    private static void WriteTable(BenchmarkResult r, string model, string architecture, string compute, TextWriter output)
    {
        bool terminal = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected;
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
        });
        if (!terminal) console.Profile.Width = 160;

        console.Write(new Rule(Markup.Escape($"{model} — {architecture}, {compute}, {r.Options.Repetitions} repetition(s) after a warm-up")).LeftJustified());
        var speed = NewTable("Speed", "Test", "Median t/s", "Min t/s", "Max t/s");
        Row(speed, $"pp{r.Options.PromptTokens}", Rate(r.PromptProcessing.Median), Rate(r.PromptProcessing.Min), Rate(r.PromptProcessing.Max));
        Row(speed, $"tg{r.Options.GeneratedTokens}", Rate(r.Generation.Median), Rate(r.Generation.Min), Rate(r.Generation.Max));
        console.Write(speed);

        var memory = NewTable("Memory", "Measure", "Value");
        Row(memory, "Weight bytes read per generated token (estimate)", Bytes(r.WeightBytesPerToken));
        if (r.RooflineFraction is double roofline)
            Row(memory, $"Generation roofline at {r.Options.BandwidthGBps!.Value.ToString("0.#", CultureInfo.InvariantCulture)} GB/s",
                roofline.ToString("P1", CultureInfo.InvariantCulture));
        Row(memory, "Mapped weights (whole file)", Bytes(r.MappedWeightBytes));
        Row(memory, $"KV cache of one session ({r.Options.PromptTokens + r.Options.GeneratedTokens} tokens)", Bytes(r.KvCacheBytes));
        Row(memory, "Peak working set (touched weight pages included)", Bytes(r.PeakWorkingSetBytes));
        Row(memory, "Working set after the run (touched weight pages included)", Bytes(r.WorkingSetBytes));
        Row(memory, "Managed (GC) heap after the last collection", Bytes(r.GcHeapSizeBytes));
        console.Write(memory);
    }

    private static Table NewTable(string title, params string[] columns)
    {
        var table = new Table { Title = new TableTitle(Markup.Escape(title)), Border = TableBorder.Rounded };
        foreach (string c in columns) table.AddColumn(new TableColumn(new Text(c)));
        return table;
    }

    private static void Row(Table table, params string[] cells) => table.AddRow(cells.Select(c => (IRenderable)new Text(c)).ToArray());

    private static string Rate(double tokensPerSecond) => tokensPerSecond.ToString("F2", CultureInfo.InvariantCulture);

    private static string Bytes(long n)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double value = n;
        int unit = 0;
        while (value >= 1024 && unit < units.Length - 1) { value /= 1024; unit++; }
        return unit == 0 ? $"{n} B" : string.Create(CultureInfo.InvariantCulture, $"{value:F2} {units[unit]} ({n:N0} B)");
    }
}
