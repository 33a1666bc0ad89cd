using BenchmarkDotNet.Attributes;
using Fathom.Cpu;
using Fathom.Runtime;

namespace Fathom.Benchmarks;

/// <summary>
/// CpuBackend.Attention with DeepSeek-R1's absorbed-MLA shape (16 query heads of a 576-value key, 512-value latent,
/// one shared cache head), one thread: a decoded token over a long context, and a prompt block.
/// </summary>
public class LatentAttentionBenchmarks
{
    private const int Heads = 16, KeyDim = 576, ValueDim = 512;

    [Params(1024)]
    public int Context { get; set; }

    private CpuBackend _backend = null!;
    private KvLayerCache _cache = null!;
    private float[] _queries = null!, _output = null!;
    private readonly AttentionShape _shape = new(Heads, 1, KeyDim, ValueDim, 0.07f);

    [GlobalSetup]
    public void Setup()
    {
        _backend = new CpuBackend(1);
        _cache = new KvLayerCache(Context + 64, KeyDim, ValueDim, valuesShareKeys: true);
        var rng = new Random(3);
        for (int i = 0; i < _cache.Keys.Length; i++) _cache.Keys[i] = (float)(rng.NextDouble() * 2 - 1);
        _queries = new float[64 * Heads * KeyDim];
        for (int i = 0; i < _queries.Length; i++) _queries[i] = (float)(rng.NextDouble() * 2 - 1);
        _output = new float[64 * Heads * ValueDim];
    }

    [GlobalCleanup]
    public void Cleanup() => _backend.Dispose();

    [Benchmark(Description = "decode: 1 token after Context")]
    public void Decode() => _backend.Attention(_queries.AsSpan(0, Heads * KeyDim), _cache, _output, _shape, Context, 1);

    [Benchmark(Description = "prompt: 64 tokens after Context - 64")]
    public void Prompt() => _backend.Attention(_queries, _cache, _output, _shape, Context - 64, 64);
}
