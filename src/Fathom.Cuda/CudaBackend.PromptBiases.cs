using Fathom.Cuda.Kernels;

namespace Fathom.Cuda;

/// <summary>
/// A prompt batch's query, key and value biases (<see cref="AddQkvBiases"/>) in one launch of <c>add_biases3</c>
/// (Kernels/prompt_products.cu) instead of three of <c>add_bias</c>: the key and value rows of a GQA model are small,
/// so their launches cost more than their bytes.
/// </summary>
public sealed partial class CudaBackend
{
    /// <summary>
    /// Whether a prompt batch's three attention biases are added in one launch (on with <see cref="PromptFusedKernels"/>
    /// unless FATHOM_CUDA_PROMPT_FUSED2=0, which keeps three add_bias launches; the same bits either way). One-token
    /// steps add their biases in the products (MatMulGroup) and are not affected.
    /// </summary>
    public bool PromptFusedBiases { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_PROMPT_FUSED2") != "0";

    /// <summary>Batches whose three attention biases went in one launch, so far.</summary>
    public long FusedBiasLaunches { get; private set; }

    public void AddQkvBiases(Span<float> q, ReadOnlySpan<float> queryBias, Span<float> k, ReadOnlySpan<float> keyBias, Span<float> v,
        ReadOnlySpan<float> valueBias, int tokens)
    {
        if (!(PromptFusedBiases && PromptFusedKernels && tokens >= BlasMinimumTokens
            && TryVectorBias(q, queryBias, tokens, out var query) && TryVectorBias(k, keyBias, tokens, out var key)
            && TryVectorBias(v, valueBias, tokens, out var value)))
        {
            if (!queryBias.IsEmpty) AddBias(q, queryBias, tokens);
            if (!keyBias.IsEmpty) AddBias(k, keyBias, tokens);
            if (!valueBias.IsEmpty) AddBias(v, valueBias, tokens);
            return;
        }
        long groups = query.Groups + key.Groups + value.Groups;
        if (groups == 0) return;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("AddQkvBiases");
        new KernelArguments()
            .Pointer(query.Rows).Pointer(query.Bias).Int(query.Width4).Long(query.Groups)
            .Pointer(key.Rows).Pointer(key.Bias).Int(key.Width4).Long(key.Groups)
            .Pointer(value.Rows).Pointer(value.Bias).Int(value.Width4).Long(value.Groups)
            .Launch(_context, _kernels.Function("add_biases3"), "add_biases3", Blocks(groups, ElementThreads), 1, ElementThreads);
        FusedBiasLaunches++;
    }

    /// <summary>
    /// <paramref name="bias"/> on <paramref name="tokens"/> rows of <paramref name="rows"/> as add_biases3 takes it: both
    /// attached, on 16-byte boundaries, the width a multiple of 4 (an empty bias: nothing to add, 0 groups).
    /// </summary>
    private bool TryVectorBias(Span<float> rows, ReadOnlySpan<float> bias, int tokens, out (ulong Rows, ulong Bias, int Width4, long Groups) vector)
    {
        vector = default;
        if (bias.IsEmpty) return true;
        long n = (long)tokens * bias.Length;
        if (bias.Length % 4 != 0 || rows.Length < n) return false;
        if (!TryResident(rows[..(int)n], out ulong device) || !TryResident(bias, out ulong weights) || ((device | weights) & 15) != 0) return false;
        vector = (device, weights, bias.Length / 4, n / 4);
        return true;
    }
}
