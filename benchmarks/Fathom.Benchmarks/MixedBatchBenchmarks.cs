using BenchmarkDotNet.Attributes;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Benchmarks;

/// <summary>
/// A continuous-batching step on a Q8_0 llama too large for the caches: 7 sessions decode one token each while an
/// 8th feeds a 16-token prompt chunk. One <see cref="Model.ForwardBatch"/> against the same work as a prompt
/// <see cref="Model.Forward(InferenceSession, ReadOnlySpan{int}, Span{float}, bool)"/> plus a
/// <see cref="Model.DecodeBatch"/> of the 7 (every weight row read twice instead of once).
/// </summary>
[MemoryDiagnoser]
public class MixedBatchBenchmarks
{
    private const int Decoding = 7;
    private const int ChunkLength = 16;
    private const int Position = 32;
    private string _path = "";
    private GgufFile _file = null!;
    private Model _model = null!;
    private InferenceSession[] _decoding = [];
    private InferenceSession _prompting = null!;
    private BatchSequence[] _batch = [];
    private float[] _logits = [];
    private readonly int[] _tokens = Enumerable.Range(7, Decoding).ToArray();
    private readonly int[] _chunk = Enumerable.Range(100, ChunkLength).ToArray();

    [Params(2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var spec = new SyntheticModelSpec
        {
            Architecture = "llama", VocabSize = 1024, HiddenSize = 2048, Layers = 2, Heads = 16, KvHeads = 4, FeedForward = 5632,
            DefaultType = GgmlType.Q8_0,
        };
        _path = Path.Combine(Path.GetTempPath(), $"fathom-bench-{Guid.NewGuid():N}.gguf");
        ModelSynthesizer.Write(spec, _path);
        _file = GgufFile.Open(_path);
        _model = ModelLoader.Load(_file, new ModelOptions { Threads = Threads });
        _logits = new float[(Decoding + 1) * _model.VocabSize];
        int[] prompt = Enumerable.Range(10, Position).ToArray();
        _decoding = new InferenceSession[Decoding];
        for (int s = 0; s < Decoding; s++)
        {
            _decoding[s] = _model.CreateSession(64);
            _model.Forward(_decoding[s], prompt, _logits);
        }
        _prompting = _model.CreateSession(64);
        _model.Forward(_prompting, prompt, _logits);
        _batch = [.. _decoding.Select((s, i) => new BatchSequence(s, _tokens.AsMemory(i, 1))), new BatchSequence(_prompting, _chunk)];
    }

    // Every step runs at the same positions (rewinding is only a position change).
    private void Rewind()
    {
        foreach (InferenceSession s in _decoding) s.Truncate(Position);
        _prompting.Truncate(Position);
    }

    [Benchmark(Baseline = true, Description = "Forward(16-token chunk) + DecodeBatch(7)")]
    public float Separate()
    {
        Rewind();
        _model.Forward(_prompting, _chunk, _logits.AsSpan(Decoding * _model.VocabSize));
        _model.DecodeBatch(_decoding, _tokens, _logits);
        return _logits[0];
    }

    [Benchmark(Description = "one ForwardBatch (7 × 1 token + 16-token chunk)")]
    public float Mixed()
    {
        Rewind();
        _model.ForwardBatch(_batch, _logits);
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
