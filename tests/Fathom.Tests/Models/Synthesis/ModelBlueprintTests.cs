using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;

namespace Fathom.Tests.Models.Synthesis;

public sealed class ModelBlueprintTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("fathom-blueprint-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static void AssertSameLayout(ModelBlueprint expected, ModelBlueprint actual)
    {
        Assert.Equal(expected.Tensors.Select(t => (t.Name, string.Join(",", t.Shape), t.Type)), actual.Tensors.Select(t => (t.Name, string.Join(",", t.Shape), t.Type)));
        Assert.Equal(expected.Metadata.Select(p => p.Key), actual.Metadata.Select(p => p.Key));
        // The header bytes cover every metadata value (tokenizer arrays included) and the tensor table.
        Assert.Equal(expected.ContentHash(), actual.ContentHash());
    }

    [Theory]
    [InlineData("deepseek2-v3")]
    [InlineData("deepseek2-v2-lite")]
    [InlineData("qwen2")]
    [InlineData("llama-rope-freqs")]
    public void HeaderOfAWrittenModelGivesBackItsSpecsBlueprint(string variant)
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec(variant);
        string path = Path.Combine(_directory, "model.gguf");
        ModelSynthesizer.Write(spec, path);
        using GgufFile file = GgufFile.Open(path);
        AssertSameLayout(ModelBlueprint.FromSpec(spec), ModelBlueprint.FromGgufHeader(file));
    }

    [Fact]
    public void SyntheticCopyOfAFileHasItsExactLayoutAndRuns()
    {
        // The copy is made from the original's header alone, with its own random weights.
        SyntheticModelSpec spec = SyntheticPresets.TinyDeepSeekR1 with { Fill = WeightFill.Tiled, Seed = 77 };
        string original = Path.Combine(_directory, "original.gguf");
        ModelSynthesizer.Write(spec, original);
        ModelBlueprint header;
        using (GgufFile file = GgufFile.Open(original)) header = ModelBlueprint.FromGgufHeader(file);

        string copy = SyntheticModelCache.GetOrCreate(header, directory: _directory);
        using GgufFile copied = GgufFile.Open(copy);
        AssertSameLayout(header, ModelBlueprint.FromGgufHeader(copied));
        using GgufFile source = GgufFile.Open(original);
        Assert.Equal(source.Tensors.Select(t => t.ByteSize), copied.Tensors.Select(t => t.ByteSize));
        Assert.False(source.GetTensorData(source.GetTensor("blk.1.ffn_up_exps.weight")).SequenceEqual(copied.GetTensorData(copied.GetTensor("blk.1.ffn_up_exps.weight"))));

        using Model model = ModelLoader.Load(copied, new ModelOptions { Threads = 2 });
        float[] logits = model.Forward(model.CreateSession(16), [5, 6, 7]);
        Assert.Equal(spec.VocabSize, logits.Length);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void SplitModelsHeaderIsTheWholeModelWithoutSplitKeys()
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("qwen2");
        IReadOnlyList<string> parts = ModelSynthesizer.Build(spec).WriteSplit(Path.Combine(_directory, "split"), maxTensorsPerPart: 5);
        Assert.True(parts.Count > 1);
        using GgufFile file = GgufFile.Open(parts[0]);
        ModelBlueprint blueprint = ModelBlueprint.FromGgufHeader(file);
        Assert.DoesNotContain(blueprint.Metadata, p => p.Key.StartsWith("split.", StringComparison.Ordinal));
        AssertSameLayout(ModelBlueprint.FromSpec(spec), blueprint);
    }

    [Fact]
    public void FewerLayersKeepsTheFirstBlocksAndLowersTheBlockCount()
    {
        ModelBlueprint full = ModelBlueprint.FromSpec(SyntheticPresets.TinyDeepSeekR1);
        ModelBlueprint two = full.WithLayers(2);
        Assert.Equal(3, full.Layers);
        Assert.Equal(2, two.Layers);
        Assert.Equal(2u, two[GgufKeys.Arch.BlockCount("deepseek2")].AsUInt32());
        Assert.Equal(full.Tensors.Where(t => t.Layer is null or < 2).Select(t => t.Name), two.Tensors.Select(t => t.Name));
        Assert.Equal(full.ByteSize - full.Tensors.Where(t => t.Layer == 2).Sum(t => t.ByteSize), two.ByteSize);

        // A leading-dense count above the new block count is lowered with it.
        ModelBlueprint one = ModelBlueprint.FromSpec(SyntheticPresets.TinyDeepSeekR1 with { LeadingDenseBlocks = 2 }).WithLayers(1);
        Assert.Equal(1, one.LeadingDenseLayers);

        string path = SyntheticModelCache.GetOrCreate(two, directory: _directory);
        using Model model = ModelLoader.Load(path, new ModelOptions { Threads = 2 });
        Assert.Equal(2, model.Config.BlockCount);
        Assert.Throws<ArgumentOutOfRangeException>(() => full.WithLayers(4));
    }

    [Fact]
    public void CacheWritesOnceAndNamesFilesByContent()
    {
        ModelBlueprint blueprint = ModelBlueprint.FromSpec(LlamaCppAgreementTests.Spec("llama"));
        Assert.False(SyntheticModelCache.Contains(blueprint, directory: _directory));
        string path = SyntheticModelCache.GetOrCreate(blueprint, directory: _directory);
        DateTime written = File.GetLastWriteTimeUtc(path);
        Assert.True(SyntheticModelCache.Contains(blueprint, directory: _directory));
        Assert.Equal(path, SyntheticModelCache.GetOrCreate(blueprint, directory: _directory));
        Assert.Equal(written, File.GetLastWriteTimeUtc(path));
        Assert.Single(Directory.GetFiles(_directory));

        Assert.NotEqual(path, SyntheticModelCache.PathFor(blueprint.WithLayers(1), directory: _directory));
        Assert.NotEqual(path, SyntheticModelCache.PathFor(blueprint, WeightFill.Quantized, directory: _directory));
        Assert.NotEqual(path, SyntheticModelCache.PathFor(blueprint, seed: 99, directory: _directory));
    }

    [Fact]
    public void ZeroExpertsLeavesOnlyTheRoutedExpertsZeroAndTheModelRuns()
    {
        SyntheticModelSpec spec = SyntheticPresets.TinyDeepSeekR1;
        ModelBlueprint blueprint = ModelBlueprint.FromSpec(spec);
        string tiled = SyntheticModelCache.GetOrCreate(blueprint, WeightFill.Tiled, directory: _directory);
        string holes = SyntheticModelCache.GetOrCreate(blueprint, WeightFill.ZeroExperts, directory: _directory);
        Assert.NotEqual(tiled, holes);
        Assert.Equal(new FileInfo(tiled).Length, new FileInfo(holes).Length);

        using GgufFile file = GgufFile.Open(holes);
        int experts = 0;
        foreach (GgufTensorInfo tensor in file.Tensors)
        {
            ReadOnlySpan<byte> data = file.GetTensorData(tensor);
            if (tensor.Name.EndsWith("_exps.weight", StringComparison.Ordinal))
            {
                experts++;
                Assert.True(data.IndexOfAnyExcept((byte)0) < 0, $"{tensor.Name} is not all zeros");
            }
            else if (tensor.Name.EndsWith(".weight", StringComparison.Ordinal))
            {
                Assert.True(data.IndexOfAnyExcept((byte)0) >= 0, $"{tensor.Name} is all zeros");
            }
        }
        Assert.Equal(3 * (spec.Layers - spec.LeadingDenseBlocks), experts);

        // Zero experts contribute nothing; the rest of the model (shared experts, attention) still gives varied logits.
        using Model model = ModelLoader.Load(file, new ModelOptions { Threads = 2 });
        float[] logits = model.Forward(model.CreateSession(16), [5, 6, 7]);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
        Assert.True(logits.Max() - logits.Min() > 1e-3f);
    }

    [Fact]
    public void WritingIsDeterministicForFillAndSeed()
    {
        ModelBlueprint blueprint = ModelBlueprint.FromSpec(LlamaCppAgreementTests.Spec("qwen2") with { DefaultType = GgmlType.Q4_K });
        foreach (WeightFill fill in new[] { WeightFill.Tiled, WeightFill.Quantized })
        {
            string a = Path.Combine(_directory, $"a-{fill}.gguf"), b = Path.Combine(_directory, $"b-{fill}.gguf");
            ModelSynthesizer.Write(blueprint, a, fill, seed: 5);
            ModelSynthesizer.Write(blueprint, b, fill, seed: 5);
            Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));
        }
    }
}
