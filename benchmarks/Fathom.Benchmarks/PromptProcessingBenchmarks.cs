using BenchmarkDotNet.Attributes;
using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Benchmarks;

/// <summary>
/// pp512 end to end: a 512-token prompt through a model shaped like DeepSeek-R1-Distill-Qwen-1.5B (hidden 1536,
/// 12 query / 2 KV heads, FFN 8960, vocabulary 151,936) with 4 of its 28 layers, typed as llama.cpp's Q4_K_M
/// makes it, random weights, 2 threads: the tiled batch path against the reference path (one Dot per (row, token),
/// attention per (token, head)).
/// </summary>
/// <remarks>Run: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --filter '*PromptProcessing*' --job short</remarks>
public class PromptProcessingBenchmarks
{
    private const int Layers = 4, PromptTokens = 512, Threads = 2;

    private string _path = "";
    private GgufFile _file = null!;
    private Model _model = null!;
    private InferenceSession _session = null!;
    private float[] _logits = null!;
    private readonly int[] _prompt = Enumerable.Range(1000, PromptTokens).ToArray();

    [Params(true, false)]
    public bool Tiles { get; set; }

    /// <summary>
    /// llama.cpp's Q4_K_M choice: Q4_K everywhere, Q6_K for the output and for attn_v / ffn_down in the layers its
    /// use_more_bits rule picks (i &lt; n/8, i ≥ 7n/8, or (i − n/8) mod 3 = 2).
    /// </summary>
    private static GgmlType? Q4KM(string name)
    {
        if (name == "output.weight") return GgmlType.Q6_K;
        if (!name.Contains("attn_v.weight") && !name.Contains("ffn_down.weight")) return null;
        int layer = int.Parse(name.Split('.')[1]);
        bool moreBits = layer < Layers / 8 || layer >= 7 * Layers / 8 || (layer - Layers / 8) % 3 == 2;
        return moreBits ? GgmlType.Q6_K : null;
    }

    [GlobalSetup]
    public void Setup()
    {
        var spec = new SyntheticModelSpec
        {
            Architecture = "qwen2", Name = "qwen2-1.5b-shape", VocabSize = 151936, HiddenSize = 1536, Layers = Layers,
            Heads = 12, KvHeads = 2, FeedForward = 8960, ContextLength = 4096, RopeBase = 1e6f,
            DefaultType = GgmlType.Q4_K, TypeFor = Q4KM, Fill = WeightFill.Tiled,
        };
        _path = Path.Combine(Path.GetTempPath(), $"fathom-pp-{Guid.NewGuid():N}.gguf");
        ModelSynthesizer.Write(spec, _path);
        _file = GgufFile.Open(_path);
        _model = ModelLoader.Load(_file, new CpuBackend(Threads, Tiles));
        _session = _model.CreateSession(PromptTokens + 16);
        _logits = new float[_model.VocabSize];
    }

    [Benchmark(Description = "pp512, 4 layers of Qwen2-1.5B Q4_K_M")]
    public float Prompt()
    {
        _session.Reset();
        _model.Forward(_session, _prompt, _logits);
        return _logits[0];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _model.Dispose();
        _file.Dispose();
        File.Delete(_path);
    }
}
