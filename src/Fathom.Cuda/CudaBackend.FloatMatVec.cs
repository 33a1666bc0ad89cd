using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// One-token products of F32 weights with long rows (the MoE routers) through <c>matvec_f32_rows</c>, a block per row;
/// and the rule that lets a packing (CudaBackend.MatVec.cs, CudaBackend.Norms.cs) outlive a float product between
/// the op that made it and the integer product that reads it (DeepSeek's FFN norm, then its router, then the shared
/// expert's gate).
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private const int FloatRowThreads = 256;

    /// <summary>
    /// Whether one-token F32 products of rows of at least <see cref="FloatRowThreads"/> float4 use <c>matvec_f32_rows</c>
    /// (on unless FATHOM_CUDA_F32_ROWS=0, which keeps <c>matvec_f32</c>, for comparisons).
    /// </summary>
    public bool FloatRowProducts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_F32_ROWS") != "0";

    /// <summary><c>y = W · x</c> (+ bias, + what y held) through <c>matvec_f32_rows</c>; false, with nothing queued, when it does not apply.</summary>
    private bool FloatRowProduct(WeightMatrix weight, DeviceWeight w, ulong x, ulong y, ulong bias, bool accumulate)
    {
        int columns = weight.Columns;
        if (!FloatRowProducts || weight.Format.Type != GgmlType.F32 || columns % 4 != 0 || columns / 4 < FloatRowThreads
            || weight.RowBytes % 16 != 0 || ((w.Pointer | x) & 15) != 0)
            return false;
        KeepPackingAcrossFloatProduct(y, weight.Rows);
        new KernelArguments().Pointer(w.Pointer).Long(weight.RowBytes / 16).Pointer(x).Pointer(y).Int(columns / 4).Pointer(bias).Int(accumulate ? 1 : 0)
            .Launch(_context, _kernels.Function("matvec_f32_rows"), weight.Name, (uint)weight.Rows, 1, FloatRowThreads);
        return true;
    }

    /// <summary>
    /// A float product (op <see cref="_ops"/>) that does not write the source of the last packing, or of the last
    /// packable norm or SiLU output, keeps them for the next product, as an integer product does (only when they were
    /// current for the op just before: an older packing may describe values changed since).
    /// </summary>
    private void KeepPackingAcrossFloatProduct(ulong output, long outputCount)
    {
        if (_lastPacking.Op == _ops - 1) KeepPackingUnlessOverwritten(output, outputCount);
        if (_lastPackable.Op == _ops - 1 && !Overlaps(output, outputCount, _lastPackable.Output, _lastPackable.Count)) _lastPackable.Op = _ops;
    }
}
