using Fathom.Cuda.Kernels;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// A prompt batch's projection into the residual stream followed by the next norm (<see cref="MatMulResidualRmsNorm"/>):
/// the cuBLAS product goes to its own buffer and was then added into the residual (<c>add</c>) and the sum normalized
/// (<c>rms_norm_rows</c>), two passes over the residual; <c>add_rms_norm_rows</c> (Kernels/prompt_products.cu) adds and
/// normalizes in one, writing the sum back, with the same block size and so the same bits.
/// </summary>
public sealed partial class CudaBackend
{
    /// <summary>
    /// Whether a prompt batch's residual add and the norm after it run as one kernel (on with
    /// <see cref="PromptFusedKernels"/> and <see cref="VectorNorms"/> unless FATHOM_CUDA_PROMPT_FUSED2=0, which keeps
    /// add then rms_norm_rows; the same bits either way). A one-token step takes the separate calls as before.
    /// </summary>
    public bool PromptFusedResidualNorms { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_PROMPT_FUSED2") != "0";

    /// <summary>Residual adds queued with the norm after them in one kernel, so far.</summary>
    public long FusedResidualNorms { get; private set; }

    public void MatMulResidualRmsNorm(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> residual, Span<float> product, int tokens,
        ReadOnlySpan<float> normWeight, Span<float> normed, float epsilon)
    {
        int n = checked(tokens * weight.Rows), d = normWeight.Length, n4 = d / 4;
        ulong x = 0, o = 0;
        bool fusable = PromptFusedResidualNorms && PromptFusedKernels && VectorNorms && tokens >= BlasMinimumTokens && _blas is not null
            && d == weight.Rows && d % 4 == 0 && n4 <= NormChunks * MaxNormThreads && !OnHost(weight)
            && residual.Length >= n && product.Length >= n && normed.Length >= n
            // Both outputs on the device (no staging buffer to copy back).
            && TryResident(residual[..n], out x) && TryResident(normed[..n], out o);
        if (!fusable)
        {
            MatMulResidual(weight, input, residual, product, tokens);
            RmsNorm(residual[..n], normWeight, normed, tokens, epsilon);
            return;
        }
        MatMul(weight, input, product, tokens);
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("Add + RmsNorm");
        ulong y = In(product[..n], _input);
        ulong w = In(normWeight, _side);
        _lastPackable = default; // nothing here is a one-token product's input
        if (((x | y | w | o) & 15) != 0)
        {
            // The vector kernel's loads need 16-byte boundaries: the separate kernels, as Add and RmsNorm launch them.
            new KernelArguments().Pointer(x).Pointer(y).Long(n)
                .Launch(_context, _kernels.Function("add"), "add", Blocks(n, ElementThreads), 1, ElementThreads);
            LaunchRmsNorm(x, w, o, d, tokens, epsilon, packable: true); // CudaBackend.Norms.cs
            return;
        }
        // rms_norm_rows' block size for the row (LaunchRmsNorm), so the double sums add in the same order.
        uint threads = (uint)Math.Min(MaxNormThreads, (n4 + NormThreadQuantum - 1) / NormThreadQuantum * NormThreadQuantum);
        new KernelArguments().Pointer(x).Pointer(y).Pointer(w).Pointer(o).Int(n4).Float(epsilon)
            .Launch(_context, _kernels.Function("add_rms_norm_rows"), "add_rms_norm_rows", (uint)tokens, 1, threads);
        FusedResidualNorms++;
    }
}
