using Fathom.Cuda.Kernels;

namespace Fathom.Cuda;

/// <summary>
/// Two one-row norms in one launch (<see cref="RmsNormPair"/>, Kernels/ops.cu <c>rms_norm_rows_pair</c>): MLA's query
/// norm (q_a, packed for the q_b product that follows) and its latent norm, both right after their one stacked
/// product. Each row takes <c>rms_norm_rows</c>' arithmetic at that kernel's block size for the row, so the outputs and
/// the packing are the same bits as two <see cref="RmsNorm"/> calls.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>Launches of <c>rms_norm_rows_pair</c> so far.</summary>
    public long PairedNorms { get; private set; }

    public void RmsNormPair(ReadOnlySpan<float> firstInput, ReadOnlySpan<float> firstWeight, Span<float> firstOutput,
        ReadOnlySpan<float> secondInput, ReadOnlySpan<float> secondWeight, Span<float> secondOutput, float epsilon)
    {
        int n0 = firstWeight.Length, n1 = secondWeight.Length;
        if (firstInput.Length < n0 || firstOutput.Length < n0 || secondInput.Length < n1 || secondOutput.Length < n1)
            throw new ArgumentException($"RMS norms of {n0} and {n1} values need buffers that size");
        if (!PairedNorm(firstInput[..n0], firstWeight, firstOutput[..n0], secondInput[..n1], secondWeight, secondOutput[..n1], epsilon))
        {
            RmsNorm(firstInput, firstWeight, firstOutput, 1, epsilon);
            RmsNorm(secondInput, secondWeight, secondOutput, 1, epsilon);
        }
    }

    /// <summary>
    /// Queues <c>rms_norm_rows_pair</c> when <see cref="FusedDecode"/> is on and both rows take <c>rms_norm_rows</c>
    /// (<see cref="NormRowThreads"/>) with every operand attached; false, with nothing queued, otherwise.
    /// </summary>
    private bool PairedNorm(ReadOnlySpan<float> x0, ReadOnlySpan<float> w0, Span<float> y0, ReadOnlySpan<float> x1, ReadOnlySpan<float> w1, Span<float> y1,
        float epsilon)
    {
        if (!FusedDecode || w0.IsEmpty || w1.IsEmpty) return false;
        if (!TryResident(x0, out ulong x0d) || !TryResident(w0, out ulong w0d) || !TryResident(y0, out ulong y0d)
            || !TryResident(x1, out ulong x1d) || !TryResident(w1, out ulong w1d) || !TryResident(y1, out ulong y1d))
            return false;
        int threads0 = NormRowThreads(x0d, w0d, y0d, w0.Length), threads1 = NormRowThreads(x1d, w1d, y1d, w1.Length);
        if (threads0 == 0 || threads1 == 0) return false;

        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("RmsNorm (pair)");
        // The first row's output may be packed for the product that follows, as a lone norm's (the second's is not).
        (int pack, ulong codes, ulong scales) = FusedPackingFor(w0d, y0d, w0.Length, 1, packable: true);
        // One block per row at the larger row's block size: the smaller row's extra threads hold zeros, which leave its
        // sums as they are at its own block size (rms_norm_rows_pair in Kernels/ops.cu).
        new KernelArguments().Pointer(x0d).Pointer(w0d).Pointer(y0d).Int(w0.Length / 4).Int(pack).Pointer(codes).Pointer(scales)
            .Pointer(x1d).Pointer(w1d).Pointer(y1d).Int(w1.Length / 4).Float(epsilon)
            .Launch(_context, _kernels.Function("rms_norm_rows_pair"), "rms_norm_rows_pair", 2, 1, (uint)Math.Max(threads0, threads1));
        PairedNorms++;
        return true;
    }
}
