namespace Fathom.Models.Placement;

/// <summary>
/// How a model's weights are split between the GPU and the CPU: llama.cpp's <c>-ngl</c>, <c>--cpu-moe</c>,
/// <c>--n-cpu-moe</c> and <c>--override-tensor</c>, or <c>--fit</c>. The default puts everything on the GPU.
/// </summary>
public sealed record PlacementOptions
{
    /// <summary>
    /// <c>-ngl N</c>, counted as llama.cpp counts it: of the blocks and the output layer after them (with which the
    /// token embedding goes here), the last N are on the GPU — <c>-ngl 1</c> is the output layer alone, the block count
    /// plus one is everything; null puts every layer on the GPU.
    /// </summary>
    public int? GpuLayers { get; init; }

    /// <summary><c>--cpu-moe</c>: every block's routed experts stay on the CPU.</summary>
    public bool CpuMoe { get; init; }

    /// <summary><c>--n-cpu-moe N</c>: the routed experts of blocks 0..N-1 stay on the CPU.</summary>
    public int CpuMoeLayers { get; init; }

    /// <summary><c>--override-tensor</c> rules in order; the first whose pattern a tensor name contains decides it, before any other option.</summary>
    public IReadOnlyList<TensorOverride> Overrides { get; init; } = [];

    /// <summary>
    /// <c>--fit</c>: choose the placement for the GPU memory actually free: attention, shared experts, dense layers, the
    /// output and the KV cache first, then routed experts from the last block down, then fewer layers.
    /// </summary>
    public bool Fit { get; init; }

    /// <summary><c>--fit-target</c>: bytes <see cref="Fit"/> leaves free on the GPU besides the KV cache and scratch (llama.cpp: 1024 MiB).</summary>
    public long FitTargetBytes { get; init; } = 1L << 30;

    /// <summary>Tokens of context one session reserves (its KV cache lives on the GPU whatever the placement).</summary>
    public int ContextSize { get; init; } = 4096;

    /// <summary>Throws <see cref="ArgumentException"/> for negative counts or <see cref="Fit"/> combined with choices it would make itself.</summary>
    public void Validate()
    {
        if (GpuLayers < 0) throw new ArgumentException($"-ngl takes a layer count of 0 or more, not {GpuLayers}");
        if (CpuMoeLayers < 0) throw new ArgumentException($"--n-cpu-moe takes a layer count of 0 or more, not {CpuMoeLayers}");
        if (ContextSize <= 0) throw new ArgumentException($"the context size must be positive, not {ContextSize}");
        if (FitTargetBytes < 0) throw new ArgumentException("--fit-target takes 0 or more MiB");
        if (Fit && (GpuLayers is not null || CpuMoe || CpuMoeLayers > 0))
            throw new ArgumentException("--fit chooses the layers and experts on the GPU itself: give it without -ngl, --cpu-moe and --n-cpu-moe (--override-tensor rules are kept)");
    }

    /// <summary>The options as command-line arguments (for summaries).</summary>
    public override string ToString()
    {
        var parts = new List<string>();
        if (GpuLayers is int n) parts.Add($"-ngl {n}");
        if (CpuMoe) parts.Add("--cpu-moe");
        if (CpuMoeLayers > 0) parts.Add($"--n-cpu-moe {CpuMoeLayers}");
        foreach (TensorOverride o in Overrides) parts.Add($"--override-tensor {o}");
        if (Fit) parts.Add("--fit");
        return parts.Count == 0 ? "all on the GPU" : string.Join(' ', parts);
    }
}
