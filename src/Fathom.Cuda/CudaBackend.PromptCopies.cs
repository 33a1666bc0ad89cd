using Fathom.Cuda.Kernels;

namespace Fathom.Cuda;

/// <summary>
/// A prompt batch's row copies (<see cref="CopyRows"/>: MLA's latent taken out of kv_a's rows) in 16-byte vectors
/// (Kernels/prompt_products.cu's copy_rows4): a quarter of the threads and loads of copy_rows, the same values.
/// </summary>
public sealed partial class CudaBackend
{
    /// <summary>
    /// Whether a prompt batch's row copies (at least <see cref="BlasMinimumTokens"/> rows) move float4 when widths,
    /// strides and addresses allow (on with <see cref="PromptFusedKernels"/> unless FATHOM_CUDA_PROMPT_FUSED2=0, which
    /// keeps copy_rows). Fewer rows (a decode step's) take copy_rows as before.
    /// </summary>
    public bool PromptVectorCopies { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_PROMPT_FUSED2") != "0";

    /// <summary>Row copies made in 16-byte vectors, so far.</summary>
    public long VectorRowCopies { get; private set; }

    /// <summary>Queues the copy with copy_rows4 when it applies; false leaves it to copy_rows.</summary>
    private bool CopyRowsInVectors(ulong from, int sourceStride, ulong to, int destinationStride, int rows, int width)
    {
        if (!PromptVectorCopies || !PromptFusedKernels || rows < BlasMinimumTokens
            || ((width | sourceStride | destinationStride) & 3) != 0 || ((from | to) & 15) != 0)
            return false;
        int width4 = width / 4;
        int threads = Math.Min(ElementThreads, (width4 + 31) / 32 * 32);
        IntPtr function = _kernels.Function("copy_rows4");
        for (int first = 0; first < rows; first += MaxGridRows)
            new KernelArguments().Pointer(from + (ulong)first * (ulong)sourceStride * sizeof(float)).Int(sourceStride / 4)
                .Pointer(to + (ulong)first * (ulong)destinationStride * sizeof(float)).Int(destinationStride / 4).Int(width4)
                .Launch(_context, function, "copy_rows4", Blocks(width4, threads), (uint)Math.Min(MaxGridRows, rows - first), (uint)threads);
        VectorRowCopies++;
        return true;
    }
}
