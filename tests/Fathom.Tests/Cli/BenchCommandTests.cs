using System.Text.Json.Nodes;
using Fathom.Cli;
using Fathom.Models.Synthesis;
using Fathom.Tests.Models;

namespace Fathom.Tests.Cli;

public sealed class BenchCommandTests : IDisposable
{
    private readonly string _model = ModelTestKit.Synthesize(LlamaCppAgreementTests.Spec("qwen2"));

    public void Dispose() => File.Delete(_model);

    private static (int Code, string Output, string Error) Invoke(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = FathomCommandLine.Invoke(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public void JsonHasTheMedianRatesAndTheRunsSettings()
    {
        var (code, output, error) = Invoke("bench", "-m", _model, "-p", "8", "-ub", "3", "-n", "4", "-r", "3", "-t", "2", "--bandwidth", "25", "--json");
        Assert.True(code == 0, error);
        JsonObject json = JsonNode.Parse(output)!.AsObject();
        double pp = (double)json["pp_tokens_per_second"]!, tg = (double)json["tg_tokens_per_second"]!;
        Assert.True(pp > 0 && double.IsFinite(pp) && tg > 0 && double.IsFinite(tg), output);
        Assert.True((double)json["pp_tokens_per_second_min"]! <= pp && pp <= (double)json["pp_tokens_per_second_max"]!);
        Assert.True((double)json["tg_tokens_per_second_min"]! <= tg && tg <= (double)json["tg_tokens_per_second_max"]!);
        Assert.Equal(_model, (string)json["model"]!);
        Assert.Equal(2, (int)json["threads"]!);
        Assert.Equal(3, (int)json["repetitions"]!);
        Assert.Equal(3, (int)json["n_ubatch"]!);
        Assert.True((long)json["weight_bytes_per_token"]! > 0);
        Assert.True((long)json["peak_working_set_bytes"]! > 0);
        Assert.True((long)json["gc_heap_size_bytes"]! > 0);
        Assert.Equal((long)json["weight_bytes_per_token"]! * tg / 25e9, (double)json["roofline_fraction"]!, 12);
        Assert.Equal("given", (string)json["bandwidth_source"]!);
        Assert.False((bool)json["synthetic"]!);
        Assert.Null(json["scaled_from_layers"]);
        Assert.Equal(pp, (double)json["measured_pp_tokens_per_second"]!);
    }

    [Fact]
    public void LikeWithTooLittleMemoryBuildsFewerLayersAndSaysTheResultIsScaled()
    {
        ModelBlueprint full = ModelBlueprint.FromSpec(SyntheticPresets.TinyDeepSeekR1);
        long twoLayers = full.WithLayers(2).ByteSize;
        string budget = ((twoLayers + full.ByteSize) / 2 / 1e9).ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        var (code, output, error) = Invoke("bench", "--like", "tiny-deepseek-r1", "-p", "8", "-n", "4", "-r", "1", "-t", "2", "--max-memory", budget, "--json");
        Assert.True(code == 0, error);
        JsonObject json = JsonNode.Parse(output)!.AsObject();
        Assert.True((bool)json["synthetic"]!);
        Assert.Equal(2, (int)json["scaled_from_layers"]!);
        Assert.Equal(2, (int)json["built_layers"]!);
        Assert.Equal(3, (int)json["total_layers"]!);
        Assert.Equal(full.ByteSize, (long)json["full_model_bytes"]!);
        Assert.Equal(twoLayers, (long)json["built_model_bytes"]!);
        Assert.False((bool)json["fits_in_memory_budget"]!);
        double tgScale = (double)json["tg_time_scale"]!, ppScale = (double)json["pp_time_scale"]!;
        Assert.Equal(Fathom.Evaluation.SyntheticBuildPlan.ScaleFor(full, 2), tgScale, 12);
        Assert.Equal(Fathom.Evaluation.SyntheticBuildPlan.ScaleFor(full, 2, countNonLayer: false), ppScale, 12);
        Assert.True(ppScale > tgScale);
        Assert.Equal((double)json["measured_pp_tokens_per_second"]! / ppScale, (double)json["pp_tokens_per_second"]!, 9);
        Assert.Equal((double)json["measured_tg_tokens_per_second"]! / tgScale, (double)json["tg_tokens_per_second"]!, 9);
        Assert.Equal("measured", (string)json["bandwidth_source"]!);
        Assert.True((double)json["bandwidth_gbps"]! > 0);

        (code, output, error) = Invoke("bench", "--like", "tiny-deepseek-r1", "-p", "8", "-n", "4", "-r", "1", "-t", "2", "--max-memory", budget, "--bandwidth", "20");
        Assert.True(code == 0, error);
        Assert.Contains("SCALED: built 2 of 3 layers; per-layer time scaled", output);
        Assert.Contains("Fits this machine's memory", output);
    }

    [Fact]
    public void LikeWithoutMemoryForEvenOneMoeLayerSaysSo()
    {
        var (code, output, error) = Invoke("bench", "--like", "tiny-deepseek-r1", "--max-memory", "0.000001", "-t", "2");
        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.StartsWith("error: not enough memory: even 2 of 3 layers need", error);
    }

    [Fact]
    public void LikeAFileCopiesItsHeader()
    {
        var (code, output, error) = Invoke("bench", "--like", _model, "-p", "8", "-n", "4", "-r", "1", "-t", "2", "--bandwidth", "20", "--json");
        Assert.True(code == 0, error);
        JsonObject json = JsonNode.Parse(output)!.AsObject();
        Assert.Equal($"{Path.GetFileName(_model)} (synthetic copy)", (string)json["model"]!);
        using var file = Fathom.Gguf.GgufFile.Open(_model);
        Assert.Equal(file.Tensors.Sum(t => t.ByteSize), (long)json["full_model_bytes"]!);
        Assert.Null(json["scaled_from_layers"]);
    }

    [Fact]
    public void ListPresetsPrintsEveryPresetWithItsFullSize()
    {
        var (code, output, error) = Invoke("bench", "--list-presets");
        Assert.True(code == 0, error);
        foreach (RealModelPreset preset in RealModelPresets.All)
        {
            Assert.Contains(preset.Name, output);
            Assert.Contains(Fathom.Evaluation.ByteSizes.Format(preset.Blueprint().ByteSize), output);
        }
    }

    [Fact]
    public void LikeSynthesizesThePresetAndPrintsTables()
    {
        var (code, output, error) = Invoke("bench", "--like", "tiny-deepseek-r1", "-p", "16", "-n", "4", "-r", "1", "-t", "2");
        Assert.True(code == 0, error);
        Assert.Contains("tiny-deepseek-r1 (synthetic)", output);
        Assert.Contains("pp16", output);
        Assert.Contains("tg4", output);
        Assert.Contains("Peak working set", output);
    }

    [Fact]
    public void HelpListsThePresets()
    {
        var (code, output, _) = Invoke("bench", "--help");
        Assert.Equal(0, code);
        Assert.Contains("tiny-deepseek-r1", output);
    }

    [Theory]
    [InlineData("-p", "0")]
    [InlineData("-n", "0")]
    [InlineData("-r", "0")]
    [InlineData("-t", "0")]
    [InlineData("-p", "4000", "-n", "100")]
    [InlineData("--bandwidth", "0")]
    [InlineData("--bandwidth", "fast")]
    [InlineData("--max-memory", "0")]
    [InlineData("--like", "tiny-deepseek-r1")]
    public void BadArgumentsGiveOneLineErrors(params string[] extra)
    {
        var (code, output, error) = Invoke(["bench", "-m", _model, .. extra]);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.StartsWith("error: ", error);
        Assert.Single(error.TrimEnd().Split('\n'));
    }

    [Fact]
    public void UnknownPresetsAndMissingFilesAreNamed()
    {
        var (code, _, error) = Invoke("bench", "--like", "huge-model");
        Assert.Equal(2, code);
        Assert.Contains("unknown preset 'huge-model' and no such file; presets: tiny-deepseek-r1, deepseek-r1:ud-iq1_s", error);
        (code, _, error) = Invoke("bench", "-m", _model + ".missing");
        Assert.Equal(1, code);
        Assert.StartsWith("error: ", error);
        (code, _, error) = Invoke("bench");
        Assert.Equal(2, code);
        Assert.Contains("exactly one of --model/-m and --like", error);
    }
}
