using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cuda;

/// <summary>
/// The launches of RMSNorm and SiLU·gate, with the packing of the one-token integer product that follows fused in
/// (CudaBackend.MatVec.cs): a norm's or SiLU's output is usually the input of such a product, which would otherwise
/// launch <c>pack_activations_*</c> on it first. The backend does not know the next product when it launches the norm,
/// so it remembers, per norm weight (per SiLU output), the format the product right after packed that output in last
/// time; a decode step repeats the one before it, so from the second step on the norm packs and the product finds its
/// packing made (<see cref="_lastPacking"/>). A wrong guess costs the packing only: the product checks the format and
/// count and packs for itself when they differ, and the guess is corrected.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    // rms_norm_rows: values per thread and load (a float4), loads in flight per thread, threads per block at most; a
    // block's threads are whole Q8_K blocks of float4 (64 threads).
    private const int NormChunks = 4, NormThreadQuantum = 64, MaxNormThreads = 1024;
    // rms_norm_row_wide: threads per block, each normalizing one float4 (Kernels/ops.cu WIDE_NORM_THREADS).
    private const int WideNormThreads = 256;
    // silu_mul_pack's block: one Q8_K block (Kernels/ops.cu).
    private const int SiluPackThreads = 256;
    // Kernels/activations.cu PACK_*.
    private const int PackNone = 0, PackQ8_0 = 1, PackQ8_K = 2;

    /// <summary>
    /// Whether rms_norm and silu_mul write the packed input of the integer product that follows them (on unless
    /// FATHOM_CUDA_FUSED_PACKING=0, which leaves the packing to the product, for comparisons).
    /// </summary>
    public bool FusedPacking { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_FUSED_PACKING") != "0";

    /// <summary>
    /// Whether RMSNorm rows of aligned float4 use <c>rms_norm_rows</c> (all loads up front, a block of up to 1,024 threads;
    /// on unless FATHOM_CUDA_NORM_ROWS=0, which keeps the plain <c>rms_norm</c>, for comparisons; fused packing needs it).
    /// </summary>
    public bool VectorNorms { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_NORM_ROWS") != "0";

    /// <summary>
    /// Whether a one-token norm of a wide row (at least <see cref="WideNormMinimumWidth"/> values; R1's 7,168) runs over
    /// several blocks (<c>rms_norm_row_wide</c>, each block summing the whole row itself in rms_norm_rows' order and
    /// normalizing and packing its own 1,024 values) instead of <c>rms_norm_rows</c>' one block; not in place. The same
    /// bits either way. On unless FATHOM_CUDA_WIDE_NORMS=0, which keeps the single block, for comparisons.
    /// </summary>
    public bool WideNorms { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_WIDE_NORMS") != "0";

    /// <summary>The narrowest row <see cref="WideNorms"/> takes (tests lower it to run narrower rows through the wide kernel).</summary>
    internal int WideNormMinimumWidth { get; set; } = 2048;

    /// <summary>
    /// Whether the small operations between a decode step's products take their fused or faster forms: routing by
    /// <c>route_experts</c> (one barrier a top-k round), a MoE output added into the residual row by
    /// <c>add_weighted_rows</c> itself (<see cref="AddWeightedRowsToResidual"/>). On unless FATHOM_CUDA_FUSED_SMALL=0,
    /// which keeps the former kernels and launches, for comparisons. Results are the same bit for bit either way.
    /// </summary>
    public bool FusedSmallOps { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_FUSED_SMALL") != "0";

    /// <summary>One-token norms queued as <c>rms_norm_row_wide</c> (<see cref="WideNorms"/>), so far.</summary>
    public long WideNormLaunches { get; private set; }

    /// <summary>Norms and SiLUs queued with the next product's packing fused in, so far.</summary>
    public long FusedPackings { get; private set; }

    // Per norm weight (or SiLU output) address: the format and value count the product right after packed its output in.
    private readonly Dictionary<ulong, (GgmlType Format, long Count)> _packingAfter = [];
    // The last norm or SiLU whose output the next product may pack: its output, value count, key and op.
    private (ulong Output, long Count, ulong Key, long Op) _lastPackable;

    /// <summary>Queues RMSNorm of <paramref name="tokens"/> rows of <paramref name="n"/>; <paramref name="packable"/>: the output is not a staging buffer.</summary>
    private void LaunchRmsNorm(ulong x, ulong w, ulong o, int n, int tokens, float epsilon, bool packable)
    {
        int n4 = n / 4;
        int rowThreads = NormRowThreads(x, w, o, n);
        if (rowThreads == 0)
        {
            _lastPackable = default;
            new KernelArguments().Pointer(x).Pointer(w).Pointer(o).Int(n).Float(epsilon)
                .Launch(_context, _kernels.Function("rms_norm"), "rms_norm", (uint)tokens, 1, NormThreads);
            return;
        }
        (int pack, ulong codes, ulong scales) = FusedPackingFor(w, o, n, tokens, packable);
        uint threads = (uint)rowThreads;
        // The wide kernel's blocks read the whole row while each writes its slice: only into another buffer.
        ulong bytes = (ulong)n * sizeof(float);
        if (WideNorms && tokens == 1 && n >= WideNormMinimumWidth && (o + bytes <= x || x + bytes <= o))
        {
            new KernelArguments().Pointer(x).Pointer(w).Pointer(o).Int(n4).Int((int)threads).Float(epsilon).Int(pack).Pointer(codes).Pointer(scales)
                .Launch(_context, _kernels.Function("rms_norm_row_wide"), "rms_norm_row_wide", (uint)((n4 + WideNormThreads - 1) / WideNormThreads), 1, WideNormThreads);
            WideNormLaunches++;
            return;
        }
        new KernelArguments().Pointer(x).Pointer(w).Pointer(o).Int(n4).Float(epsilon).Int(pack).Pointer(codes).Pointer(scales)
            .Launch(_context, _kernels.Function("rms_norm_rows"), "rms_norm_rows", (uint)tokens, 1, threads);
    }

    /// <summary>rms_norm_rows' block size for a row of <paramref name="n"/> at these addresses, or 0 when the row takes the plain rms_norm.</summary>
    private int NormRowThreads(ulong x, ulong w, ulong o, int n)
    {
        int n4 = n / 4;
        if (!VectorNorms || n % 4 != 0 || ((x | w | o) & 15) != 0 || n4 > NormChunks * MaxNormThreads) return 0;
        return Math.Min(MaxNormThreads, (n4 + NormThreadQuantum - 1) / NormThreadQuantum * NormThreadQuantum);
    }

    /// <summary>Queues <c>gate = silu(gate) · up</c> over <paramref name="n"/> values; <paramref name="packable"/>: gate is not a staging buffer.</summary>
    private void LaunchSiluMul(ulong gate, ulong up, long n, bool packable)
    {
        (int pack, ulong codes, ulong scales) = FusedPackingFor(gate, gate, n, 1, packable);
        if (pack == PackNone)
        {
            new KernelArguments().Pointer(gate).Pointer(up).Long(n)
                .Launch(_context, _kernels.Function("silu_mul"), "silu_mul", Blocks(n, ElementThreads), 1, ElementThreads);
            return;
        }
        new KernelArguments().Pointer(gate).Pointer(up).Long(n).Int(pack).Pointer(codes).Pointer(scales)
            .Launch(_context, _kernels.Function("silu_mul_pack"), "silu_mul_pack", Blocks(n, SiluPackThreads), 1, SiluPackThreads);
    }

    /// <summary>
    /// The packing to fuse into the op now queued (its output <paramref name="output"/>, <paramref name="count"/>
    /// values, remembered under <paramref name="key"/>): the kernel's PACK_* and where the codes and scales go, made
    /// the last packing for the product that follows; PACK_NONE when nothing was learned for the key or it does not apply.
    /// </summary>
    private (int Pack, ulong Codes, ulong Scales) FusedPackingFor(ulong key, ulong output, long count, int tokens, bool packable)
    {
        // Only a one-token op's output feeds a one-token product; a staging buffer holds other data next time.
        bool candidate = packable && tokens == 1;
        _lastPackable = candidate ? (output, count, key, _ops) : default;
        if (!candidate || !FusedPacking || !UseIntegerMatVec || !_packingAfter.TryGetValue(key, out var learned) || learned.Count != count)
            return (PackNone, 0, 0);
        int pack = learned.Format switch { GgmlType.Q8_0 => PackQ8_0, GgmlType.Q8_K => PackQ8_K, _ => PackNone };
        if (pack == PackNone || count % QuantizedMatVec.PackedBlock(learned.Format) != 0) return (PackNone, 0, 0);
        ulong packed = PackedScratch(QuantizedMatVec.PackedBytes(learned.Format, count));
        _lastPacking = (output, count, learned.Format, _ops, packed);
        FusedPackings++;
        return (pack, packed, packed + (ulong)QuantizedMatVec.ScalesOffset(count));
    }

    /// <summary>
    /// A model attaches a scratch buffer the first time it needs it, often between a norm and the product that reads
    /// the norm's output (the first decode step's QKV buffer): which product reads the norm's output is unchanged, so
    /// the step still teaches it. For learning only: the packing itself (<see cref="_lastPacking"/>) is not kept.
    /// </summary>
    private void KeepPackableAcrossAttach()
    {
        if (_lastPackable.Op == _ops - 1) _lastPackable.Op = _ops;
    }

    /// <summary>
    /// A product packs <paramref name="count"/> values at <paramref name="x"/> itself: when they are the output of the
    /// norm or SiLU just before, that op's kernel packs them next time (or stops guessing when the ranges differ).
    /// </summary>
    private void LearnPacking(ulong x, long count, GgmlType format)
    {
        if (_lastPackable.Op != _ops - 1 || _lastPackable.Output != x) return;
        if (_lastPackable.Count == count) _packingAfter[_lastPackable.Key] = (format, count);
        else _packingAfter.Remove(_lastPackable.Key);
    }
}
