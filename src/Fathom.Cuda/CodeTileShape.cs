namespace Fathom.Cuda;

/// <summary>The tiles a product on integer codes runs in (Kernels/mmq.cu; <see cref="CudaBackend.CodeTiles"/>).</summary>
public enum CodeTileShape
{
    /// <summary>128 weight rows × 64 tokens when the product has at least one such tile per multiprocessor, else 64 × 64.</summary>
    Automatic,

    /// <summary>64 weight rows × 32 tokens (<c>mmq_T</c> / <c>mmqf_T</c>, per <see cref="CudaBackend.FoldedCodeScales"/>).</summary>
    Small,

    /// <summary>64 weight rows × 64 tokens (<c>mmqt2_T</c>; <c>mmqtp2_T</c> per <see cref="CudaBackend.PipelinedCodeTiles"/>).</summary>
    Rows64,

    /// <summary>128 weight rows × 64 tokens (<c>mmqt4_T</c>; <c>mmqtp4_T</c> per <see cref="CudaBackend.PipelinedCodeTiles"/>).</summary>
    Rows128,
}
