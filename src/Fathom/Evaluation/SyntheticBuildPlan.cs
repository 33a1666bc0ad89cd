using Fathom.Models.Synthesis;

namespace Fathom.Evaluation;

/// <summary>
/// How much of a model to synthesize for a speed benchmark within a memory budget. When the whole model does not
/// fit, only its first layers are built (all leading dense layers and one or two MoE layers, or two layers of a dense
/// model) and the measured time per token is scaled up to the whole model by <see cref="TimeScale"/>.
/// </summary>
public sealed record SyntheticBuildPlan
{
    public required ModelBlueprint Full { get; init; }

    public required ModelBlueprint Built { get; init; }

    /// <summary>The memory the built model had to fit in.</summary>
    public required long BudgetBytes { get; init; }

    public int TotalLayers => Full.Layers;

    public int BuiltLayers => Built.Layers;

    public bool IsScaled => BuiltLayers < TotalLayers;

    /// <summary>Generation: time per token of the whole model ÷ that of the built one (1 when all layers are built).</summary>
    public double TimeScale => ScaleFor(Full, BuiltLayers);

    /// <summary>
    /// Prompt processing: the same ratio over the layers alone. A prompt pays the non-layer part (output matrix,
    /// embedding rows) once, for its last token, not per token, so per prompt token only the layers count.
    /// </summary>
    public double PromptTimeScale => ScaleFor(Full, BuiltLayers, countNonLayer: false);

    /// <summary>The whole model when it fits the budget, else the fewest-layer model that still has every kind of layer.</summary>
    /// <exception cref="InsufficientMemoryException">Not even that fits; the message says how much it needs.</exception>
    public static SyntheticBuildPlan Choose(ModelBlueprint full, long budgetBytes)
    {
        ArgumentNullException.ThrowIfNull(full);
        if (full.ByteSize <= budgetBytes) return new SyntheticBuildPlan { Full = full, Built = full, BudgetBytes = budgetBytes };
        int smallest = Math.Min(full.Layers, full.LeadingDenseLayers + 1);
        for (int layers = Math.Min(full.Layers - 1, full.LeadingDenseLayers + 2); layers >= smallest && layers >= 1; layers--)
        {
            ModelBlueprint built = full.WithLayers(layers);
            if (built.ByteSize <= budgetBytes) return new SyntheticBuildPlan { Full = full, Built = built, BudgetBytes = budgetBytes };
        }
        long needed = full.WithLayers(Math.Max(1, smallest)).ByteSize;
        throw new InsufficientMemoryException(
            $"not enough memory: even {Math.Max(1, smallest)} of {full.Layers} layers need {ByteSizes.Format(needed)}, " +
            $"and the budget is {ByteSizes.Format(Math.Max(0, budgetBytes))} (free memory minus a margin, or --max-memory)");
    }

    /// <summary>
    /// The factor by which a token's time grows from the first <paramref name="builtLayers"/> layers to all of them,
    /// assuming each part's time is proportional to the weight bytes a token reads from it (generation is
    /// memory-bound): (non-layer bytes + bytes of all layers) ÷ (non-layer bytes + bytes of the built layers). The
    /// non-layer part (embedding row, output matrix, final norm) counts once, whatever the number of layers; with
    /// <paramref name="countNonLayer"/> false it is left out (bytes of all layers ÷ bytes of the built layers).
    /// </summary>
    public static double ScaleFor(ModelBlueprint full, int builtLayers, bool countNonLayer = true)
    {
        ArgumentNullException.ThrowIfNull(full);
        ArgumentOutOfRangeException.ThrowIfLessThan(builtLayers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(builtLayers, full.Layers);
        long outside = 0, all = 0, built = 0;
        foreach (BlueprintTensor t in full.Tensors)
        {
            long bytes = full.BytesPerToken(t);
            if (t.Layer is not int layer) { outside += bytes; continue; }
            all += bytes;
            if (layer < builtLayers) built += bytes;
        }
        if (!countNonLayer) outside = 0;
        return (double)(outside + all) / (outside + built);
    }

    /// <summary>
    /// The whole model's figures from a run on the built one: generation tokens/s divided by <see cref="TimeScale"/>,
    /// prompt tokens/s by <see cref="PromptTimeScale"/>, the weight bytes per token of the whole model, and its roofline
    /// fraction (unchanged by the scaling, which is by bytes). The memory figures stay those of the run.
    /// </summary>
    public BenchmarkResult Scale(BenchmarkResult measured)
    {
        ArgumentNullException.ThrowIfNull(measured);
        if (!IsScaled) return measured;
        double scale = TimeScale;
        long bytesPerToken = Full.Tensors.Aggregate(0L, (sum, t) => checked(sum + Full.BytesPerToken(t)));
        ThroughputStatistics generation = measured.Generation.Slower(scale);
        return measured with
        {
            PromptProcessing = measured.PromptProcessing.Slower(PromptTimeScale),
            Generation = generation,
            WeightBytesPerToken = bytesPerToken,
            RooflineFraction = measured.Options.BandwidthGBps is double gbps ? Benchmark.RooflineFraction(bytesPerToken, generation.Median, gbps) : null,
        };
    }

    /// <summary>
    /// A GPU's free memory minus a margin for the KV cache, scratch buffers, cuBLAS's workspace and the F16 copies prompt
    /// products dequantize into: 2 GiB or a twenty-fifth of it,
    /// whichever is more. On an H200 (139.8 GiB free) that is 134.2 GiB, room for R1 UD-IQ1_S's 130.7 GiB.
    /// </summary>
    public static long GpuBudget(long freeBytes) =>
        Math.Max(0, freeBytes - Math.Max(2L << 30, freeBytes / 25));

    /// <summary>Available memory minus a margin for the runtime, KV cache and scratch: 1 GiB or a tenth of it, whichever is more.</summary>
    public static long DefaultBudget(long availableBytes) =>
        Math.Max(0, availableBytes - Math.Max(1L << 30, availableBytes / 10));
}
