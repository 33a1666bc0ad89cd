using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// One-token products through the integer kernels of Kernels/matvec_q.cu (<see cref="QuantizedMatVec"/>): the input is
/// packed once in the weights' partner format (int8 codes and block scales, the CPU's encoding) and every product of
/// that input that follows reads the packed copy. Types without such a kernel keep <c>matvec_T</c>.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private DeviceScratch? _packed;
    // The last packing: its source range and format, the op count when made, and where the packed values are.
    private (ulong Source, long Count, GgmlType Format, long Op, ulong Packed) _lastPacking;

    /// <summary>
    /// Whether one-token products of the types <see cref="QuantizedMatVec"/> supports use the integer kernels (on
    /// unless FATHOM_CUDA_MMVQ=0, which keeps every product on <c>matvec_T</c>, for comparisons).
    /// </summary>
    public bool UseIntegerMatVec { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_MMVQ") != "0";

    /// <summary>
    /// Whether one-token products of the types with fast kernels (<see cref="QuantizedMatVec.HasFastKernels"/>) take
    /// them (<c>matvec_qk_T</c> and its stacked and grouped forms; on unless FATHOM_CUDA_MATVEC_FAST=0, which keeps
    /// <c>matvec_q_T</c>, for comparisons): Q4_K's, and Q6_K's unless <see cref="FastQ6KProducts"/> is off. Same
    /// results bit for bit.
    /// </summary>
    public bool FastMatVec { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_MATVEC_FAST") != "0";

    /// <summary>
    /// Whether <see cref="FastMatVec"/> covers Q6_K (R1's shared experts, dense products and output): on unless
    /// FATHOM_CUDA_MATVEC_FAST=q4_k (Q4_K's only, for comparisons). Run 45: R1's five-layer cut 1,394.2 → 1,246.4 µs
    /// per step; Qwen-1.5B unchanged. Bit 31 of the verified steps' settings word.
    /// </summary>
    public bool FastQ6KProducts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_MATVEC_FAST") != "q4_k";

    /// <summary>Whether a one-token product of <paramref name="type"/> takes the fast kernels (when the type has them).</summary>
    private bool FastFor(GgmlType type) => FastMatVec && (type != GgmlType.Q6_K || FastQ6KProducts);

    /// <summary>
    /// Which kernels take the IQ1_S and IQ2_XXS one-token products (single and grouped): the row pairs
    /// (<see cref="IqBlockProducts"/>; the block tiles for launches of too few rows for them and for IQ2_XXS, <see cref="IqBlockProducts.For(GgmlType, IqProductKernels, int, int, int)"/>) unless FATHOM_CUDA_IQ_KERNELS says <c>tiles</c> (the block tiles, one row per
    /// thread), <c>shared</c> (the shared-grid kernels) or <c>old</c> (<c>matvec_q_T</c>'s lookups in global memory), for comparisons.
    /// </summary>
    public IqProductKernels IqProducts { get; set; } = IqProductKernelsSetting.FromEnvironment();

    /// <summary>Whether a product of <paramref name="type"/> takes the block-tile kernels (one or two rows per thread).</summary>
    private bool BlockTilesFor(GgmlType type) => IqBlockProducts.Takes(IqProducts) && IqBlockProducts.Supports(type);

    private bool SharedGrids => IqProducts == IqProductKernels.SharedGrid;

    private bool IntegerMatVecFor(WeightMatrix weight, ulong pointer) =>
        UseIntegerMatVec && QuantizedMatVec.Supports(weight.Format.Type) && QuantizedMatVec.Aligned(weight.Format.Type, pointer, weight.RowBytes);

    /// <summary>
    /// A one-token product through <c>matvec_q_T</c> when the weight type has one: <c>y = W · x</c> (+ bias, + what
    /// <c>y</c> held). False, with nothing queued, when it has none.
    /// </summary>
    private bool IntegerProduct(WeightMatrix weight, DeviceWeight w, ulong x, bool stagedInput, ulong y, long outputCount, ulong bias, bool accumulate)
    {
        if (!IntegerMatVecFor(weight, w.Pointer)) return false;
        ulong packed = PackActivations(weight.Format.DotActivationType, x, weight.Columns, stagedInput);
        KeepPackingUnlessOverwritten(y, outputCount);
        if (BlockTilesFor(weight.Format.Type))
            IqBlockProducts.Launch(_context, _kernels, weight.Format.Type, weight.Name, w.Pointer, weight.RowBytes, packed, y,
                weight.Rows, weight.Columns, bias, accumulate, kernels: IqBlockProducts.For(weight.Format.Type, IqProducts, weight.Rows, 1, _context.Device.Multiprocessors));
        else
            QuantizedMatVec.Launch(_context, _kernels, weight.Format.Type, weight.Name, w.Pointer, weight.RowBytes, packed, y,
                weight.Rows, weight.Columns, bias, accumulate, sharedGrids: SharedGrids, fast: FastFor(weight.Format.Type));
        return true;
    }

    /// <summary>
    /// Whether a run of one-token products on one input (Qwen's q, k and v; a gate and its up; MLA's q_a and kv_a; a
    /// shared expert's gate and up) takes one <c>stacked_matvec_q_T</c> launch instead of one launch each (on unless
    /// FATHOM_CUDA_STACKED=0). Same kernels' sums: each output equals its own launch's bit for bit.
    /// </summary>
    public bool StackedProducts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_STACKED") != "0";

    /// <summary>Stacked launches queued so far (<see cref="StackedProducts"/>), for tests and diagnostics.</summary>
    public long StackedLaunches { get; private set; }

    /// <summary>
    /// The products of <paramref name="weights"/> from <paramref name="start"/> on the one input (a group's input stride
    /// 0), stacked into one launch while they share type, width and row bytes and have the plain integer kernel (up to
    /// <see cref="QuantizedMatVec.MaxStacked"/>); matrix i's rows, plus its bias, go to <c>outputs[i · outputStride]</c>.
    /// Returns how many it took: 0 (nothing queued) unless at least two stack and every operand is on the device.
    /// </summary>
    private int StackedProductRun(ReadOnlySpan<WeightMatrix> weights, int start, ReadOnlySpan<float> input, Span<float> outputs, int outputStride,
        ReadOnlySpan<float[]?> biases)
    {
        if (!StackedProducts) return 0;
        WeightMatrix first = weights[start];
        GgmlType type = first.Format.Type;
        // IQ1_S and IQ2_XXS take their own kernels (matvec_iq.cu) unless the global-grid ones are asked for.
        if (IqProducts != IqProductKernels.GlobalGrid && QuantizedMatVec.HasSharedGridKernels(type)) return 0;
        Span<QuantizedMatVec.StackedMatrix> stack = stackalloc QuantizedMatVec.StackedMatrix[QuantizedMatVec.MaxStacked];
        int n = 0;
        for (int i = start; i < weights.Length && n < QuantizedMatVec.MaxStacked; i++)
        {
            WeightMatrix w = weights[i];
            if (OnHost(w) || w.Format.Type != type || w.Columns != first.Columns || w.RowBytes != first.RowBytes) break;
            // The outputs' slices must not overlap (each product writes its own), nor run past the outputs.
            if (n > 0 && stack[n - 1].Rows > outputStride || (long)i * outputStride + w.Rows > outputs.Length) break;
            ulong pointer = _weights.Get(w).Pointer;
            if (!IntegerMatVecFor(w, pointer)) break;
            ulong bias = 0;
            float[]? b = i < biases.Length ? biases[i] : null;
            if (b is not null && (b.Length < w.Rows || !TryResident(b.AsSpan(0, w.Rows), out bias))) break;
            stack[n++] = new QuantizedMatVec.StackedMatrix(pointer, bias, w.Rows);
        }
        if (n < 2 || input.Length < first.Columns) return 0;
        long outputCount = (long)(n - 1) * outputStride + stack[n - 1].Rows;
        Span<float> y = outputs.Slice(start * outputStride, (int)outputCount);
        if (!TryResident(input[..first.Columns], out ulong x) || !TryResident(y, out ulong o)) return 0;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("MatMul (1 token, stacked)");
        ulong packed = PackActivations(first.Format.DotActivationType, x, first.Columns, staged: false);
        KeepPackingUnlessOverwritten(o, outputCount);
        QuantizedMatVec.LaunchStacked(_context, _kernels, type, first.Name, stack[..n], first.RowBytes, packed, first.Columns, o, outputStride, fast: FastFor(type));
        StackedLaunches++;
        return n;
    }

    /// <summary>
    /// A one-token grouped product through <c>group_matvec_q_T</c> (see <see cref="GroupProduct"/> for the operands;
    /// the input strides are whole activation blocks there). False, with nothing queued, when the type has none.
    /// </summary>
    private bool IntegerGroupProduct(WeightMatrix shape, int matrixCount, ulong table, ulong ids, int count, ulong x, long inputCount, bool stagedInput,
        long inputStride, ulong y, long outputCount, long outputStride)
    {
        // Every uploaded matrix starts 256-byte aligned (DeviceWeights), so the first one's alignment is the group's.
        if (!IntegerMatVecFor(shape, _weights.Get(shape).Pointer)) return false;
        GgmlType activation = shape.Format.DotActivationType;
        if (inputStride % QuantizedMatVec.PackedBlock(activation) != 0) return false;
        ulong packed = PackActivations(activation, x, inputCount, stagedInput);
        KeepPackingUnlessOverwritten(y, outputCount);
        if (BlockTilesFor(shape.Format.Type))
            IqBlockProducts.LaunchSets(_context, _kernels, shape.Format.Type, shape.Name, table, 1, ids, matrixCount, shape.RowBytes,
                packed, inputCount, inputStride, y, outputStride, shape.Rows, shape.Columns, count,
                kernels: IqBlockProducts.For(shape.Format.Type, IqProducts, shape.Rows, count, _context.Device.Multiprocessors));
        else
            QuantizedMatVec.LaunchGroup(_context, _kernels, shape.Format.Type, shape.Name, table, ids, matrixCount, shape.RowBytes,
                packed, inputCount, inputStride, y, outputStride, shape.Rows, shape.Columns, count, sharedGrids: SharedGrids, fast: FastFor(shape.Format.Type));
        return true;
    }

    /// <summary>
    /// A MoE layer's gates and ups of the chosen experts (see <see cref="IComputeBackend.MatMulExpertPairs"/>) in one
    /// <c>group_matvec_q_T</c> launch over a table of both sets, when both are on the device, of one shape and type with
    /// an integer kernel; else one <see cref="MatMulExperts"/> per set. Each product is the one
    /// <see cref="MatMulExperts"/> gives, bit for bit (the same kernel, in the same lanes per row).
    /// </summary>
    public void MatMulExpertPairs(ReadOnlySpan<WeightMatrix> first, ReadOnlySpan<WeightMatrix> second, ReadOnlySpan<float> ids,
        ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
    {
        if (ids.IsEmpty) return;
        if (!PairsInOneLaunch(first, second, inputStride))
        {
            MatMulExperts(first, ids, inputs, inputStride, outputs, outputStride);
            MatMulExperts(second, ids, inputs, inputStride, outputs[(ids.Length * outputStride)..], outputStride);
            return;
        }
        WeightMatrix shape = first[0];
        int count = ids.Length;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("MatMulExpertPairs");
        (long inputExtent, _) = GroupExtents(shape.Name, count, 1, shape.Columns, inputStride, 0, inputs.Length, shape.Rows, outputStride, 0, outputs.Length);
        (_, long outputExtent) = GroupExtents(shape.Name, 2 * count, 1, shape.Columns, 0, 0, inputs.Length, shape.Rows, outputStride, 0, outputs.Length);
        ulong chosen = In(ids, _indices);
        ulong table = PairTable(first, second);
        ulong source = In(inputs[..(int)inputExtent], _input, out bool stagedInput);
        Span<float> y = outputs[..(int)outputExtent];
        // A staged output is uploaded first: the values between its rows must come back unchanged.
        ulong o = Out(y, _output, upload: true, out bool staged);
        ulong packed = PackActivations(shape.Format.DotActivationType, source, inputExtent, stagedInput);
        KeepPackingUnlessOverwritten(o, y.Length);
        if (BlockTilesFor(shape.Format.Type))
            IqBlockProducts.LaunchSets(_context, _kernels, shape.Format.Type, shape.Name, table, 2, chosen, first.Length, shape.RowBytes,
                packed, inputExtent, inputStride, o, outputStride, shape.Rows, shape.Columns, count,
                kernels: IqBlockProducts.For(shape.Format.Type, IqProducts, shape.Rows, 2 * count, _context.Device.Multiprocessors));
        else
            QuantizedMatVec.LaunchSets(_context, _kernels, shape.Format.Type, shape.Name, table, 2, chosen, first.Length, shape.RowBytes,
                packed, inputExtent, inputStride, o, outputStride, shape.Rows, shape.Columns, count, sharedGrids: SharedGrids, fast: FastFor(shape.Format.Type));
        Return(y, o, staged);
    }

    /// <summary>Whether two sets of experts can share one launch: both on the device, equal in count, shape and type, with an integer kernel.</summary>
    private bool PairsInOneLaunch(ReadOnlySpan<WeightMatrix> first, ReadOnlySpan<WeightMatrix> second, int inputStride)
    {
        if (first.IsEmpty || first.Length != second.Length || AnyOnHost(first) || AnyOnHost(second)) return false;
        WeightMatrix a = SameShape(first), b = SameShape(second);
        return a.Rows == b.Rows && a.Columns == b.Columns && a.Format.Type == b.Format.Type && a.RowBytes == b.RowBytes
            && IntegerMatVecFor(a, _weights.Get(a).Pointer) && inputStride % QuantizedMatVec.PackedBlock(a.Format.DotActivationType) == 0;
    }

    /// <summary>The device table of both sets' addresses, the first set's then the second's (made once per pair).</summary>
    private ulong PairTable(ReadOnlySpan<WeightMatrix> first, ReadOnlySpan<WeightMatrix> second)
    {
        var key = ((nint)first[0].RowPointer(0), (nint)second[^1].RowPointer(0), first.Length + second.Length);
        if (_matrixTables.TryGetValue(key, out DeviceBuffer? table)) return table.Pointer;
        return MatrixTable([.. first, .. second]);
    }

    /// <summary>
    /// <paramref name="count"/> floats at <paramref name="x"/> packed in <paramref name="activationType"/>; the last
    /// packing when it was made of the same range for the product just before, whose output did not overwrite it.
    /// </summary>
    private ulong PackActivations(GgmlType activationType, ulong x, long count, bool staged)
    {
        if (_lastPacking.Op == _ops - 1 && _lastPacking.Source == x && _lastPacking.Count == count && _lastPacking.Format == activationType)
            return _lastPacking.Packed;
        LearnPacking(x, count, activationType); // CudaBackend.Norms.cs
        ulong packed = PackedScratch(QuantizedMatVec.PackedBytes(activationType, count));
        // A staging buffer's address holds other data next time: such a packing is never reused (0 is no device address).
        _lastPacking = (staged ? 0 : x, count, activationType, -1, packed);
        QuantizedMatVec.LaunchPack(_context, _kernels, activationType, x, packed, count);
        return packed;
    }

    /// <summary>Where the packed activations go: device scratch of at least <paramref name="bytes"/>.</summary>
    private ulong PackedScratch(long bytes) => PackingScratch.Get(bytes).Pointer; // CudaBackend.ConcurrentBranches.cs

    /// <summary>The last packing may serve the next product if this one's output does not overlap its source.</summary>
    private void KeepPackingUnlessOverwritten(ulong output, long outputCount) =>
        _lastPacking.Op = Overlaps(output, outputCount, _lastPacking.Source, _lastPacking.Count) ? -1 : _ops;

    /// <summary>
    /// Whether <paramref name="outputCount"/> floats written at <paramref name="output"/> overlap the
    /// <paramref name="count"/> floats at <paramref name="source"/>: a product writing there makes a conversion of that
    /// source (rounding, packing, halves) stale for the next product.
    /// </summary>
    private static bool Overlaps(ulong output, long outputCount, ulong source, long count) =>
        output < source + (ulong)count * sizeof(float) && source < output + (ulong)outputCount * sizeof(float);

    /// <summary>The backend's context and kernels, for <see cref="OneTokenProductBenchmark"/>.</summary>
    internal CudaContext Context => _context;

    internal CudaKernels Kernels => _kernels;

    private void DisposeMatVec() => _packed?.Dispose();
}
