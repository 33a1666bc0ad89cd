using BenchmarkDotNet.Attributes;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Benchmarks;

/// <summary>
/// One decode step and one 32-token prompt of small synthetic models (the DeepSeek-R1 shape with K-quant weights,
/// and a Q8_0 llama), on the CPU backend with 1 and 2 threads.
/// </summary>
[MemoryDiagnoser]
public class ForwardBenchmarks
{
    private string _path = "";
    private GgufFile _file = null!;
    private Model _model = null!;
    private InferenceSession _session = null!;
    private readonly float[] _logits = new float[1024];
    private readonly int[] _prompt = Enumerable.Range(10, 32).ToArray();

    [Params("deepseek2-r1-q4_k", "llama-q8_0")]
    public string Model { get; set; } = "";

    [Params(1, 2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        SyntheticModelSpec spec = Model switch
        {
            "deepseek2-r1-q4_k" => SyntheticPresets.TinyDeepSeekR1 with
            {
                TypeFor = n => n.Contains("_shexp") || n == "output.weight" ? GgmlType.Q6_K : GgmlType.Q4_K,
            },
            _ => new SyntheticModelSpec
            {
                Architecture = "llama", VocabSize = 1024, HiddenSize = 512, Layers = 4, Heads = 8, KvHeads = 4, FeedForward = 1536,
                DefaultType = GgmlType.Q8_0,
            },
        };
        _path = Path.Combine(Path.GetTempPath(), $"fathom-bench-{Guid.NewGuid():N}.gguf");
        ModelSynthesizer.Write(spec, _path);
        _file = GgufFile.Open(_path);
        _model = ModelLoader.Load(_file, new ModelOptions { Threads = Threads });
        _session = _model.CreateSession(256);
    }

    [Benchmark(Description = "decode 1 token at position 32")]
    public float Decode()
    {
        _session.Truncate(Math.Min(_session.Position, 32));
        if (_session.Position < 32) _model.Forward(_session, _prompt, _logits);
        _model.Forward(_session, [7], _logits);
        return _logits[0];
    }

    [Benchmark(Description = "prompt of 32 tokens")]
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
