namespace Fathom.Evaluation;

/// <summary>
/// What <see cref="Benchmark.Run"/> measured. Memory figures are process-wide snapshots taken after the run and
/// labelled for what they are: the working set counts the memory-mapped weight pages the run touched (they are
/// file-backed, shared and reclaimable), so "working set minus weights" is only an estimate of the run's own memory.
/// </summary>
public sealed record BenchmarkResult
{
    public required BenchmarkOptions Options { get; init; }

    /// <summary>Prompt processing: <see cref="BenchmarkOptions.PromptTokens"/> tokens in one forward pass.</summary>
    public required ThroughputStatistics PromptProcessing { get; init; }

    /// <summary>Generation: one token per forward pass.</summary>
    public required ThroughputStatistics Generation { get; init; }

    /// <summary>Estimated weight bytes one generated token reads (see <see cref="Benchmark.WeightBytesPerToken"/>).</summary>
    public required long WeightBytesPerToken { get; init; }

    /// <summary>Bytes of every weight tensor in the file: what the model maps.</summary>
    public required long MappedWeightBytes { get; init; }

    /// <summary>Bytes of one session's KV cache at the benchmark's context size.</summary>
    public required long KvCacheBytes { get; init; }

    /// <summary>The process's peak working set (<c>Process.PeakWorkingSet64</c>), mapped weight pages included.</summary>
    public required long PeakWorkingSetBytes { get; init; }

    /// <summary>The process's working set after the run (<c>Environment.WorkingSet</c>), mapped weight pages included.</summary>
    public required long WorkingSetBytes { get; init; }

    /// <summary>The managed heap after the last GC (<c>GC.GetGCMemoryInfo().HeapSizeBytes</c>): sessions, scratch, logits.</summary>
    public required long GcHeapSizeBytes { get; init; }

    /// <summary>
    /// Weight bytes per generated token ÷ median time per token ÷ <see cref="BenchmarkOptions.BandwidthGBps"/>: the
    /// share of the memory-bandwidth roofline generation reaches; null without a bandwidth.
    /// </summary>
    public double? RooflineFraction { get; init; }
}
