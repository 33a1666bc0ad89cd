using BenchmarkDotNet.Attributes;
using Fathom.Evaluation;

namespace Fathom.Benchmarks;

/// <summary>
/// The per-token cost of scoring outside the forward pass, at DeepSeek-V3/R1's vocabulary (129,280): the NLL alone
/// (log-sum-exp), the full log-softmax row that is saved or compared, and one KL divergence row against a base.
/// </summary>
[MemoryDiagnoser]
public class PerplexityScoringBenchmarks
{
    private const int Vocab = 129280;
    private readonly float[] _logits = new float[Vocab];
    private readonly float[] _logProbabilities = new float[Vocab];
    private readonly float[] _base = new float[Vocab];
    private readonly KlDivergenceStatistics _kl = new();

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(3);
        for (int i = 0; i < Vocab; i++) _logits[i] = (float)(rng.NextDouble() * 20 - 10);
        LogSoftmax.Compute(_logits, _logProbabilities);
        for (int i = 0; i < Vocab; i++) _logits[i] += (float)(rng.NextDouble() * 0.1);
        LogSoftmax.Compute(_logits, _base);
    }

    [Benchmark]
    public double NegativeLogLikelihood() => LogSoftmax.LogSumExp(_logits, _logProbabilities) - _logits[42];

    [Benchmark]
    public double LogSoftmaxRow() => LogSoftmax.Compute(_logits, _logProbabilities);

    [Benchmark]
    public int KlDivergenceRow()
    {
        _kl.Add(_base, _logProbabilities, 42);
        return _kl.Count;
    }
}
