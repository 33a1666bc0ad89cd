using BenchmarkDotNet.Attributes;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Benchmarks;

/// <summary>
/// One decode step for 8 sessions at position 32 of a Q8_0 llama too large for the caches: one <see cref="Model.DecodeBatch"/> against
/// eight single-session <see cref="Model.Forward(InferenceSession, ReadOnlySpan{int}, Span{float}, bool)"/> calls
/// (the same work, but every weight row read eight times).
/// </summary>
[MemoryDiagnoser]
public class BatchDecodeBenchmarks
{
    private const int Sessions = 8;
    private const int Position = 32;
    private string _path = "";
    private GgufFile _file = null!;
    private Model _model = null!;
    private InferenceSession[] _sessions = [];
    private float[] _logits = [];
    private readonly int[] _tokens = Enumerable.Range(7, Sessions).ToArray();

    [Params(2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var spec = new SyntheticModelSpec
        {
            // About 100 MB of Q8_0 weights: more than the caches hold, so a decode step is bound by reading them.
            Architecture = "llama", VocabSize = 1024, HiddenSize = 2048, Layers = 2, Heads = 16, KvHeads = 4, FeedForward = 5632,
            DefaultType = GgmlType.Q8_0,
        };
        _path = Path.Combine(Path.GetTempPath(), $"fathom-bench-{Guid.NewGuid():N}.gguf");
        ModelSynthesizer.Write(spec, _path);
        _file = GgufFile.Open(_path);
        _model = ModelLoader.Load(_file, new ModelOptions { Threads = Threads });
        _logits = new float[Sessions * _model.VocabSize];
        int[] prompt = Enumerable.Range(10, Position).ToArray();
        _sessions = new InferenceSession[Sessions];
        for (int s = 0; s < Sessions; s++)
        {
            _sessions[s] = _model.CreateSession(64);
            _model.Forward(_sessions[s], prompt, _logits);
        }
    }

    // Every step decodes at the same position (rewinding is only a position change).
    private void Rewind()
    {
        foreach (InferenceSession s in _sessions) s.Truncate(Position);
    }

    [Benchmark(Baseline = true, Description = "8 sessions, one Forward each")]
    public float OneByOne()
    {
        Rewind();
        for (int s = 0; s < Sessions; s++) _model.Forward(_sessions[s], _tokens.AsSpan(s, 1), _logits.AsSpan(s * _model.VocabSize));
        return _logits[0];
    }

    [Benchmark(Description = "8 sessions, one DecodeBatch")]
    public float Batched()
    {
        Rewind();
        _model.DecodeBatch(_sessions, _tokens, _logits);
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
