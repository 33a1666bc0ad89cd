using BenchmarkDotNet.Attributes;
using Fathom.Generation;
using Fathom.Runtime.Sampling;

namespace Fathom.Benchmarks;

/// <summary>
/// The host's share of choosing a token from Qwen's 152,064 logits: the sampler over the full row (what a GPU decode
/// step used to copy back and scan), against the sampler over the 256 candidates a device selection returns
/// (<see cref="Sampler.TrySample"/>) and the host selection that stands in for the device's here. Logits: noise with a
/// few peaks, as a trained model's are, so top-p's cut falls inside the candidates.
/// </summary>
[MemoryDiagnoser]
public class SamplingBenchmarks
{
    private const int Vocab = 152_064;
    private readonly float[] _logits = new float[Vocab], _row = new float[Vocab];
    private readonly TokenCandidates _candidates = new();
    private Sampler _greedy = null!, _nucleus = null!, _sorting = null!, _selecting = null!;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        for (int i = 0; i < Vocab; i++) _logits[i] = (float)(rng.NextDouble() * 6 - 3);
        for (int p = 0; p < 12; p++) _logits[rng.Next(Vocab)] = 12f + (float)rng.NextDouble() * 4;
        _greedy = new Sampler(Vocab, SamplingOptions.Greedy);
        _nucleus = new Sampler(Vocab, SamplingOptions.DeepSeekR1 with { Seed = 1 });
        _sorting = new Sampler(Vocab, SamplingOptions.DeepSeekR1 with { Seed = 1 }) { SelectsCandidates = false };
        _selecting = new Sampler(Vocab, SamplingOptions.DeepSeekR1 with { Seed = 1 });
        _logits.CopyTo(_row);
        HostTokenSelection.Select(_row, _selecting.SelectionRequest(), _candidates);
        if (!_selecting.TrySample(_candidates, out _)) throw new InvalidOperationException("the candidates should decide these logits");
    }

    [Benchmark(Baseline = true)]
    public int FullRowGreedy() => _greedy.Sample(_logits);

    /// <summary><see cref="Sampler.Sample"/> as generation on the CPU calls it: the host selection's candidates decide.</summary>
    [Benchmark]
    public int FullRowTopP() => _nucleus.Sample(_logits);

    /// <summary>The same choice by sorting every logit within the cutoff (the sampler before the candidates' shortcut).</summary>
    [Benchmark]
    public int FullRowTopPSorted() => _sorting.Sample(_logits);

    /// <summary>What the host does per token when the GPU selected: the draw over 256 candidates.</summary>
    [Benchmark]
    public int CandidatesTopP() => _selecting.TrySample(_candidates, out int token) ? token : -1;

    /// <summary>The host reference of the device's selection (penalties none, 256 candidates).</summary>
    [Benchmark]
    public int HostSelection()
    {
        _logits.CopyTo(_row);
        HostTokenSelection.Select(_row, _selecting.SelectionRequest(), _candidates);
        return _candidates.Count;
    }
}
