using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Mixture-of-experts routing and grouped products on the device (Kernels/experts.cu): the router's scores become
/// chosen expert ids and weights in device memory, and the expert products and the weighted sum read them there, so
/// a decoded token's MoE layer queues its work without waiting for the host. Grouped products of equally shaped
/// matrices (a layer's experts, an attention's per-head k_b and v_b) run as one launch over a device table of the
/// matrices' addresses.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    // route_experts: a thread per expert, in whole warps, at most a block's 1,024 (more experts are taken in strides).
    private const int RouteMaxThreads = 1024, RouteMaxGroups = 64, RouteMaxUsed = 32;

    // route_experts (one barrier a top-k round), or the former route_experts_block_rounds without FusedSmallOps.
    private string RoutingKernel => FusedSmallOps ? "route_experts" : "route_experts_block_rounds";

    // Device tables of matrix addresses, per group: known by the first and last matrix's data and the count.
    private readonly Dictionary<(nint First, nint Last, int Count), DeviceBuffer> _matrixTables = [];
    // Contiguous copies of group inputs whose stride does not keep the activation rounding's blocks aligned.
    private float[] _groupInput = [];

    // A prompt's routed experts: the grouping (segments, order, pair rows, tiles), the codes of their inputs, and the
    // gate, up and down rows of every (token, chosen expert) pair.
    private DeviceScratch? _expertGrouping, _expertCodes, _expertCodeSums, _expertRows;

    /// <summary>
    /// Whether a prompt's routed experts are grouped and multiplied on the device (<see cref="AddRoutedExperts"/>; the
    /// default; FATHOM_CUDA_MOE_GROUPING=0 turns it off, leaving them to the host grouping).
    /// </summary>
    public bool DeviceExpertGrouping { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_MOE_GROUPING") != "0";

    /// <summary>The most routed experts the device grouping takes (its counters live in one block's shared memory).</summary>
    public const int MaxGroupedExperts = 4096;

    private const int GroupingThreads = 1024;

    public void RouteExperts(ExpertRouting routing, Span<float> logits, Span<float> ids, Span<float> weights, int tokens)
    {
        int experts = routing.ExpertCount, used = routing.UsedCount;
        if (tokens <= 0) return;
        if (logits.Length < (long)tokens * experts || ids.Length < (long)tokens * used || weights.Length < (long)tokens * used)
            throw new ArgumentException($"routing {tokens} tokens needs {tokens}×{experts} logits and {tokens}×{used} ids and weights");
        routing.Validate();
        if (used > RouteMaxUsed || routing.GroupCount > RouteMaxGroups || 2L * experts * sizeof(float) > 48 * 1024)
            throw new NotSupportedException($"routing {used} of {experts} experts in {routing.GroupCount} groups exceeds the routing kernel's limits");
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("RouteExperts");
        Span<float> scores = logits[..(tokens * experts)], chosen = ids[..(tokens * used)], chosenWeights = weights[..(tokens * used)];
        ulong s = Out(scores, _input, upload: true, out bool stagedScores);
        ulong i = Out(chosen, _output, upload: false, out bool stagedIds);
        ulong w = Out(chosenWeights, _scales, upload: false, out bool stagedWeights);
        ulong bias = routing.SelectionBias is null ? 0 : In(routing.SelectionBias, _side);
        var arguments = new KernelArguments().Pointer(s).Pointer(bias).Pointer(i).Pointer(w)
            .Int(experts).Int(used).Int(routing.SigmoidScores ? 1 : 0).Int(routing.GroupCount).Int(routing.GroupUsedCount)
            .Int(routing.NormalizeWeights ? 1 : 0).Float(routing.WeightsScale);
        // route_experts takes the one-warp routing where FastRouting allows it (CudaBackend.RouterRouting.cs).
        if (FusedSmallOps) arguments = arguments.Int(FastRouting ? 1 : 0);
        arguments.Launch(_context, _kernels.Function(RoutingKernel), RoutingKernel, (uint)tokens, 1, FusedSmallOps ? (uint)RoutingThreads(routing)
            : (uint)Math.Min(RouteMaxThreads, (experts + 31) / 32 * 32), (uint)(2 * experts * sizeof(float)));
        Return(scores, s, stagedScores);
        Return(chosen, i, stagedIds);
        Return(chosenWeights, w, stagedWeights);
    }

    public void MatMulExperts(ReadOnlySpan<WeightMatrix> experts, ReadOnlySpan<float> ids, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
    {
        if (ids.IsEmpty) return;
        if (AnyOnHost(experts)) { HostMatMulExperts(experts, ids, inputs, inputStride, outputs, outputStride); return; } // CudaBackend.Placement.cs
        WeightMatrix shape = SameShape(experts);
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("MatMulExperts");
        ulong chosen = In(ids, _indices);
        GroupProduct(shape, experts, chosen, ids.Length, inputs, inputStride, 0, outputs, outputStride, 0, 1);
    }

    public void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
        int tokens, int inputTokenStride, int outputTokenStride)
    {
        if (tokens <= 0 || weights.IsEmpty) return;
        if (AnyOnHost(weights)) { HostMatMulGroup(weights, inputs, inputStride, outputs, outputStride, tokens, inputTokenStride, outputTokenStride); return; }
        WeightMatrix shape = SameShape(weights);
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure(tokens == 1 ? "MatMulGroup (1 token)" : "MatMulGroup");
        GroupProduct(shape, weights, 0, weights.Length, inputs, inputStride, inputTokenStride, outputs, outputStride, outputTokenStride, tokens);
    }

    public void AddWeightedRows(Span<float> destination, ReadOnlySpan<float> rows, ReadOnlySpan<float> weights, int width) =>
        LaunchAddWeightedRows(destination, rows, weights, width, residual: 0);

    /// <summary>
    /// In one <c>add_weighted_rows</c> launch that also adds each column of the sum into the residual row (with
    /// <see cref="FusedSmallOps"/> and an attached residual; otherwise the two operations).
    /// </summary>
    public void AddWeightedRowsToResidual(Span<float> residual, Span<float> destination, ReadOnlySpan<float> rows, ReadOnlySpan<float> weights, int width)
    {
        if (residual.Length < width) throw new ArgumentException($"a residual of {residual.Length} values for rows of {width}", nameof(residual));
        if (!FusedSmallOps || weights.IsEmpty || width <= 0 || !TryResident(residual[..width], out ulong sum))
        {
            AddWeightedRows(destination, rows, weights, width);
            Add(residual[..width], destination[..width]);
            return;
        }
        LaunchAddWeightedRows(destination, rows, weights, width, sum);
    }

    /// <summary>Queues add_weighted_rows into <paramref name="destination"/>, and into the device row <paramref name="residual"/> unless 0.</summary>
    private void LaunchAddWeightedRows(Span<float> destination, ReadOnlySpan<float> rows, ReadOnlySpan<float> weights, int width, ulong residual)
    {
        int count = weights.Length;
        if (count == 0 || width <= 0) return;
        if (destination.Length < width || rows.Length < (long)count * width)
            throw new ArgumentException($"adding {count} weighted rows of {width} needs {count * width} values into {width}");
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure(residual == 0 ? "AddWeightedRows" : "AddWeightedRowsToResidual");
        Span<float> d = destination[..width];
        ulong to = Out(d, _output, upload: true, out bool staged);
        ulong from = In(rows[..(count * width)], _input);
        ulong factors = In(weights, _scales);
        new KernelArguments().Pointer(to).Pointer(from).Pointer(factors).Int(count).Int(width).Pointer(residual)
            .Launch(_context, _kernels.Function("add_weighted_rows"), "add_weighted_rows", Blocks(width, ElementThreads), 1, ElementThreads);
        Return(d, to, staged);
    }

    /// <summary>
    /// A prompt's routed experts on the device when every matrix is on the GPU and of a type <see cref="MultipliesCodes"/>
    /// takes (else the host grouping, <see cref="ExpertBatch.AddByExpert"/>): the chosen ids are grouped by expert
    /// (moe_group_rows: segments, a row order, each pair's row, the tiles), the inputs quantized to codes in that order,
    /// one code-product launch each for the gates, the ups and the downs over (row tile, expert's token tile), SiLU
    /// between, and each token's weighted outputs added in increasing expert id (moe_add_expert_rows). Nothing is read
    /// back to the host.
    /// </summary>
    public void AddRoutedExperts(ReadOnlySpan<WeightMatrix> gate, ReadOnlySpan<WeightMatrix> up, ReadOnlySpan<WeightMatrix> down,
        ReadOnlySpan<float> ids, ReadOnlySpan<float> weights, int used, ReadOnlySpan<float> inputs, Span<float> residual, int tokens, Span<float> work)
    {
        if (tokens <= 0) return;
        ExpertBatch.Validate(gate, up, down, ids, weights, used, inputs, residual, tokens, work);
        int experts = gate.Length;
        // CPU-placed experts are streamed to the GPU for a large enough batch (CudaBackend.StreamedExperts.cs), else multiplied there.
        bool onHost = AnyOnHost(gate) || AnyOnHost(up) || AnyOnHost(down);
        if (!DeviceExpertGrouping || experts > MaxGroupedExperts || (onHost && !StreamsExpertsOf(tokens)))
        {
            ExpertBatch.AddByExpert(this, gate, up, down, ids, weights, used, inputs, residual, tokens, work);
            return;
        }
        WeightMatrix gates = SameShape(gate), ups = SameShape(up), downs = SameShape(down);
        if (!MultipliesCodes(gates.Format.Type) || !MultipliesCodes(ups.Format.Type) || !MultipliesCodes(downs.Format.Type))
        {
            ExpertBatch.AddByExpert(this, gate, up, down, ids, weights, used, inputs, residual, tokens, work);
            return;
        }
        _context.MakeCurrent();
        ulong gateTable, upTable, downTable;
        if (!onHost) (gateTable, upTable, downTable) = (MatrixTable(gate), MatrixTable(up), MatrixTable(down));
        else if (!TryStreamExperts(gate, up, down, out gateTable, out upTable, out downTable))
        {
            ExpertBatch.AddByExpert(this, gate, up, down, ids, weights, used, inputs, residual, tokens, work);
            return;
        }
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("AddRoutedExperts");
        int width = gates.Columns, expertWidth = gates.Rows, pairs = checked(tokens * used);
        ulong chosen = In(ids[..pairs], _indices), factors = In(weights[..pairs], _scales), h = In(inputs[..(tokens * width)], _input);
        Span<float> x = residual[..(tokens * width)];
        ulong to = Out(x, _output, upload: true, out bool staged);

        // Grouping: segments (experts + 1), row order (pairs), pair rows (pairs), tile count (1), tiles (2 ints each).
        int tileTokens = CodeTokensPerTile, maxTiles = pairs / tileTokens + experts;
        DeviceBuffer grouping = (_expertGrouping ??= new DeviceScratch(_context, _retirement)).Get(sizeof(int) * (experts + 1L + 2L * pairs + 1 + 2L * maxTiles) + 8);
        ulong segments = grouping.Pointer, order = segments + (ulong)(experts + 1) * sizeof(int), slots = order + (ulong)pairs * sizeof(int);
        ulong tileCount = slots + (ulong)pairs * sizeof(int), tiles = (tileCount + sizeof(int) + 7) & ~7UL;
        new KernelArguments().Pointer(chosen).Int(pairs).Int(used).Int(experts).Pointer(segments).Pointer(order).Pointer(slots).Pointer(tiles).Pointer(tileCount).Int(tileTokens)
            .Launch(_context, _kernels.Function("moe_group_rows"), "moe_group_rows", 1, 1, GroupingThreads, (uint)(experts * sizeof(int)));

        _expertCodes ??= new DeviceScratch(_context, _retirement);
        _expertCodeSums ??= new DeviceScratch(_context, _retirement);
        DeviceBuffer intermediate = (_expertRows ??= new DeviceScratch(_context, _retirement)).Get(sizeof(float) * (2L * pairs * expertWidth + (long)pairs * width));
        ulong gateRows = intermediate.Pointer, upRows = gateRows + (ulong)pairs * (ulong)expertWidth * sizeof(float);
        ulong downRows = upRows + (ulong)pairs * (ulong)expertWidth * sizeof(float);

        GgmlType inputCodes = gates.Format.DotActivationType;
        (ulong codes, ulong sums) = QuantizeCodes(inputCodes, h, order, pairs, width, _expertCodes, _expertCodeSums);
        LaunchCodeProduct(gates, 0, gateTable, codes, sums, tiles, tileCount, segments, gateRows, expertWidth, pairs, (uint)maxTiles);
        if (ups.Format.DotActivationType != inputCodes) (codes, sums) = QuantizeCodes(ups.Format.DotActivationType, h, order, pairs, width, _expertCodes, _expertCodeSums);
        LaunchCodeProduct(ups, 0, upTable, codes, sums, tiles, tileCount, segments, upRows, expertWidth, pairs, (uint)maxTiles);
        long values = (long)pairs * expertWidth;
        new KernelArguments().Pointer(gateRows).Pointer(upRows).Long(values)
            .Launch(_context, _kernels.Function("silu_mul"), "silu_mul", Blocks(values, ElementThreads), 1, ElementThreads);
        (codes, sums) = QuantizeCodes(downs.Format.DotActivationType, gateRows, 0, pairs, expertWidth, _expertCodes, _expertCodeSums);
        LaunchCodeProduct(downs, 0, downTable, codes, sums, tiles, tileCount, segments, downRows, width, pairs, (uint)maxTiles);

        for (int first = 0; first < tokens; first += MaxGridRows)
        {
            ulong rowOffset = (ulong)first * (ulong)width * sizeof(float), pairOffset = (ulong)first * (ulong)used * sizeof(float);
            new KernelArguments().Pointer(to + rowOffset).Pointer(downRows).Pointer(factors + pairOffset).Pointer(slots + pairOffset)
                .Int(used).Int(width)
                .Launch(_context, _kernels.Function("moe_add_expert_rows"), "moe_add_expert_rows", Blocks(width, ElementThreads), (uint)Math.Min(MaxGridRows, tokens - first), ElementThreads);
        }
        if (onHost) StagingReadBy();
        Return(x, to, staged);
    }

    /// <summary>The group's common shape and type (its first matrix); grouped kernels need one.</summary>
    private static WeightMatrix SameShape(ReadOnlySpan<WeightMatrix> matrices)
    {
        WeightMatrix first = matrices[0] ?? throw new ArgumentNullException(nameof(matrices), "matrix 0 of the group is null");
        foreach (WeightMatrix m in matrices)
            if (m is null || m.Rows != first.Rows || m.Columns != first.Columns || m.Format.Type != first.Format.Type || m.RowBytes != first.RowBytes)
                throw new ArgumentException($"{first.Name}: a grouped product needs matrices of one shape and type; {m?.ToString() ?? "null"} differs");
        if (!CudaKernels.Supports(first.Format.Type)) throw new NotSupportedException($"{first.Name}: weight type {first.Format.Type} has no CUDA kernel");
        return first;
    }

    /// <summary>
    /// <paramref name="count"/> products in one launch: matrix <c>z</c> is <c>matrices[ids[z]]</c> (ids on the device)
    /// or, without ids, <c>matrices[z]</c>; its input starts at <c>z · inputStride</c>, its output at <c>z · outputStride</c>,
    /// and token <c>t</c> adds <c>t</c> token strides to both. The inputs are rounded to the weights' activation
    /// format as one range when the strides keep its blocks aligned, else gathered into contiguous rows first.
    /// </summary>
    private void GroupProduct(WeightMatrix shape, ReadOnlySpan<WeightMatrix> matrices, ulong ids, int count,
        ReadOnlySpan<float> inputs, int inputStride, int inputTokenStride, Span<float> outputs, int outputStride, int outputTokenStride, int tokens)
    {
        int rows = shape.Rows, columns = shape.Columns;
        (long inputExtent, long outputExtent) = GroupExtents(shape.Name, count, tokens, columns, inputStride, inputTokenStride, inputs.Length,
            rows, outputStride, outputTokenStride, outputs.Length);

        GgmlType activation = shape.Format.DotActivationType;
        int block = activation == GgmlType.F32 ? 1 : GgmlTypes.Layout(activation).BlockSize;
        ReadOnlySpan<float> x = inputs[..(int)inputExtent];
        if (inputStride % block != 0 || (tokens > 1 && inputTokenStride % block != 0))
        {
            // Contiguous rows of `columns`, matrix-major within a token: the rounding's blocks then fall on row starts.
            long gathered = (long)tokens * count * columns;
            if (_groupInput.Length < gathered) Attach(_groupInput = GC.AllocateArray<float>(checked((int)gathered), pinned: true));
            Span<float> g = _groupInput.AsSpan(0, (int)gathered);
            for (int t = 0; t < tokens; t++)
                CopyRows(inputs[(t * inputTokenStride)..], inputStride, g[(t * count * columns)..], columns, count, columns);
            x = g;
            (inputStride, inputTokenStride) = (columns, count * columns);
        }
        ulong table = MatrixTable(matrices);
        ulong source = In(x, _input, out bool stagedInput);
        Span<float> y = outputs[..(int)outputExtent];
        // A staged output is uploaded first: the values between its rows must come back unchanged.
        ulong o = Out(y, _output, upload: true, out bool staged);
        // A prompt's grouped products (MLA's heads) on the tensor cores (CudaBackend.Prompt.cs).
        if (ids == 0 && tokens > 1 && HalfPrecisionGroupProduct(shape, table, count, source, x.Length, stagedInput, inputStride, inputTokenStride,
                o, y.Length, outputStride, outputTokenStride, tokens))
        {
            Return(y, o, staged);
            return;
        }
        if (tokens == 1 && IntegerGroupProduct(shape, matrices.Length, table, ids, count, source, x.Length, stagedInput, inputStride, o, y.Length, outputStride))
        {
            Return(y, o, staged); // CudaBackend.MatVec.cs
            return;
        }
        source = RoundActivations(activation, source, x.Length, stagedInput);
        _lastRounding.Op = Overlaps(o, y.Length, _lastRounding.Source, _lastRounding.Count) ? -1 : _ops;

        bool vector = tokens == 1;
        int split = CudaKernels.MatMulSplit(columns), rowsPerBlock = CudaKernels.MatMulWarps / split, tile = vector ? 1 : CudaKernels.TokenTile;
        string suffix = CudaKernels.KernelSuffix(shape.Format.Type)!;
        new KernelArguments().Pointer(table).Pointer(ids).Int(matrices.Length).Long(shape.RowBytes)
            .Pointer(source).Long(inputStride).Long(inputTokenStride).Pointer(o).Long(outputStride).Long(outputTokenStride)
            .Int(rows).Int(columns).Int(tokens).Int(split)
            .Launch(_context, _kernels.Function((vector ? "group_matvec_" : "group_matmul_") + suffix), shape.Name,
                (uint)((rows + rowsPerBlock - 1) / rowsPerBlock), (uint)((tokens + tile - 1) / tile), (uint)count, CudaKernels.MatMulWarps * 32, 0);
        Return(y, o, staged);
    }

    /// <summary>
    /// The values a group of <paramref name="count"/> matrices reads and writes over <paramref name="tokens"/> tokens
    /// (input rows of <paramref name="inputWidth"/>, output rows of <paramref name="outputWidth"/>, each matrix a stride
    /// on, each token a token stride on): throws when a stride is negative, either extent passes its buffer, or output
    /// rows would overlap.
    /// </summary>
    private static (long Input, long Output) GroupExtents(string name, int count, int tokens,
        int inputWidth, int inputStride, int inputTokenStride, int inputLength, int outputWidth, int outputStride, int outputTokenStride, int outputLength)
    {
        if (inputStride < 0 || outputStride < 0 || inputTokenStride < 0 || outputTokenStride < 0)
            throw new ArgumentOutOfRangeException(nameof(inputStride), "strides must not be negative");
        long input = (long)(tokens - 1) * inputTokenStride + (long)(count - 1) * inputStride + inputWidth;
        long output = (long)(tokens - 1) * outputTokenStride + (long)(count - 1) * outputStride + outputWidth;
        if (inputLength < input) throw new ArgumentException($"{name}: the group's inputs reach value {input}, past {inputLength}");
        if (outputLength < output) throw new ArgumentException($"{name}: the group's outputs reach value {output}, past {outputLength}");
        if ((count > 1 && outputStride < outputWidth) || (tokens > 1 && outputTokenStride < (long)(count - 1) * outputStride + outputWidth))
            throw new ArgumentException($"{name}: output strides {outputStride}/{outputTokenStride} overlap rows of {outputWidth}");
        return (input, output);
    }

    /// <summary>The device addresses of the matrices' uploaded weights, as a device array (made once per group).</summary>
    private ulong MatrixTable(ReadOnlySpan<WeightMatrix> matrices)
    {
        var key = ((nint)matrices[0].RowPointer(0), (nint)matrices[^1].RowPointer(0), matrices.Length);
        if (_matrixTables.TryGetValue(key, out DeviceBuffer? table)) return table.Pointer;
        if (_retirement.Capturing) throw new InvalidOperationException("a grouped product's first use cannot be recorded into a graph");
        var addresses = new ulong[matrices.Length];
        for (int i = 0; i < matrices.Length; i++) addresses[i] = _weights.Get(matrices[i]).Pointer;
        table = new DeviceBuffer(_context, (long)addresses.Length * sizeof(ulong));
        table.Upload<ulong>(addresses);
        _matrixTables.Add(key, table);
        return table.Pointer;
    }

    /// <summary>Frees the matrix tables (from <see cref="Dispose"/>).</summary>
    private void DisposeExperts()
    {
        DisposeStreamedExperts();
        _expertGrouping?.Dispose();
        _expertCodes?.Dispose();
        _expertCodeSums?.Dispose();
        _expertRows?.Dispose();
        foreach (DeviceBuffer table in _matrixTables.Values) table.Dispose();
        _matrixTables.Clear();
    }
}
