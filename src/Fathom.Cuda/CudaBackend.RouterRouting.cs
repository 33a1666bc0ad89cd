using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// A decoded token's MoE router product and routing in one launch (<see cref="RouteToken"/>, Kernels/experts.cu
/// <c>router_route</c>): the blocks of <c>matvec_f32_rows</c> write the logits, and the last block to finish routes
/// them as <c>route_experts</c> does, so the routing needs no launch of its own and the router's rows are fetched into
/// L2 while the norm before it runs. Bit for bit the two launches it replaces.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>
    /// Whether a decode step's small kernels take the fused forms of branch <c>fuse</c>: the router and the routing
    /// in one launch (<see cref="RouteToken"/>), MLA's query and key rotations with their copy and stores in one launch
    /// (<see cref="RopeQueriesThenStoreWithRows"/>, CudaBackend.MlaRotations.cs). On unless FATHOM_CUDA_FUSED_DECODE=0,
    /// which keeps the separate launches, for comparisons; results are the same bit for bit either way.
    /// </summary>
    public bool FusedDecode { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_FUSED_DECODE") != "0";

    /// <summary>
    /// Whether a token's routing of at most 256 experts is done by one warp (Kernels/experts.cu <c>route_row_warp</c>:
    /// a lane holds a few contiguous experts in registers, a top-k round is one warp reduction and one ballot) in
    /// <c>route_experts</c> and <c>router_route</c>, with the choices and weights of the block-wide rounds bit for bit.
    /// On unless FATHOM_CUDA_FAST_ROUTING=0, which keeps the block-wide rounds, for comparisons.
    /// </summary>
    public bool FastRouting { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_FAST_ROUTING") != "0";

    /// <summary>The most experts <see cref="FastRouting"/> routes with one warp (eight a lane); more take the block-wide rounds.</summary>
    public const int WarpRoutingMaxExperts = 256;

    // Threads of a route_experts block: one warp for a sigmoid routing the warp takes alone (its scores need no block
    // sums), else a thread per expert in whole warps, at most RouteMaxThreads.
    private int RoutingThreads(ExpertRouting routing) =>
        FastRouting && routing.SigmoidScores && routing.ExpertCount <= WarpRoutingMaxExperts ? 32 : Math.Min(RouteMaxThreads, (routing.ExpertCount + 31) / 32 * 32);

    /// <summary>Router products launched with their routing fused in (<see cref="RouteToken"/>), so far.</summary>
    public long FusedRoutings { get; private set; }

    // router_route's count of finished blocks; the last block sets it back to zero.
    private DeviceBuffer? _routeCounter;

    public void RouteToken(WeightMatrix router, ExpertRouting routing, ReadOnlySpan<float> input, Span<float> logits, Span<float> ids, Span<float> weights)
    {
        ArgumentNullException.ThrowIfNull(router);
        ArgumentNullException.ThrowIfNull(routing);
        int experts = routing.ExpertCount, used = routing.UsedCount;
        if (router.Rows != experts)
            throw new ArgumentException($"{router.Name}: {router.Rows} rows for a routing of {experts} experts", nameof(router));
        if (input.Length < router.Columns) throw new ArgumentException($"{router.Name}: input holds {input.Length} values, {router.Columns} needed", nameof(input));
        if (logits.Length < experts || ids.Length < used || weights.Length < used)
            throw new ArgumentException($"routing one token needs {experts} logits and {used} ids and weights");
        if (!FusedRouting(router, routing, input, logits[..experts], ids[..used], weights[..used]))
        {
            MatMul(router, input, logits, 1);
            RouteExperts(routing, logits, ids, weights, 1);
        }
    }

    /// <summary>
    /// Queues <c>router_route</c> when it gives exactly what <c>matvec_f32_rows</c> then <c>route_experts</c> give:
    /// the router is an F32 matrix on the device that <see cref="FloatRowProduct"/> would take, every operand is in an
    /// attached buffer, and the routing's result does not depend on its block's thread count (sigmoid scores, or the
    /// 256 threads <see cref="RouteExperts"/> would give it too; a softmax's sum is a block reduction). False, with
    /// nothing queued, otherwise.
    /// </summary>
    private bool FusedRouting(WeightMatrix router, ExpertRouting routing, ReadOnlySpan<float> input, Span<float> logits, Span<float> ids, Span<float> weights)
    {
        int experts = routing.ExpertCount, used = routing.UsedCount, columns = router.Columns;
        if (!FusedDecode || !FloatRowProducts || OnHost(router) || router.Format.Type != GgmlType.F32 || columns % 4 != 0 || columns / 4 < FloatRowThreads
            || router.RowBytes % 16 != 0)
            return false;
        bool sameThreads = Math.Min(RouteMaxThreads, (experts + 31) / 32 * 32) == FloatRowThreads;
        if (!(routing.SigmoidScores || sameThreads) || used > RouteMaxUsed || routing.GroupCount > RouteMaxGroups || 2L * experts * sizeof(float) > 48 * 1024)
            return false;
        if (!TryResident(input[..columns], out ulong x) || !TryResident(logits, out ulong s) || !TryResident(ids, out ulong i) || !TryResident(weights, out ulong w))
            return false;
        ulong bias = 0;
        if (routing.SelectionBias is not null && !TryResident(routing.SelectionBias, out bias)) return false;
        DeviceWeight weight = _weights.Get(router);
        if (((weight.Pointer | x) & 15) != 0) return false;
        if (_routeCounter is null)
        {
            if (_retirement.Capturing) return false; // made outside a recording; this step launches the two kernels
            _context.MakeCurrent();
            _routeCounter = new DeviceBuffer(_context, sizeof(uint));
            _routeCounter.Upload<uint>([0u]);
        }
        routing.Validate();
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("RouteToken");
        // The input's packing (the FFN norm's, for the shared experts' gate) outlives this launch unless it writes there.
        KeepPackingAcrossRouting(s, experts, i, used, w, used);
        new KernelArguments().Pointer(weight.Pointer).Long(router.RowBytes / 16).Pointer(x).Pointer(s).Int(columns / 4).Pointer(bias).Pointer(i).Pointer(w)
            .Int(used).Int(routing.SigmoidScores ? 1 : 0).Int(routing.GroupCount).Int(routing.GroupUsedCount).Int(routing.NormalizeWeights ? 1 : 0)
            .Float(routing.WeightsScale).Pointer(_routeCounter.Pointer).Int(FastRouting ? 1 : 0)
            .Launch(_context, _kernels.Function("router_route"), router.Name, (uint)experts, 1, FloatRowThreads, (uint)(2 * experts * sizeof(float)));
        FusedRoutings++;
        return true;
    }

    /// <summary>
    /// <see cref="KeepPackingAcrossFloatProduct"/> for an op with three outputs (logits, ids, weights): the packing and
    /// the packable norm output just before stay current unless one of them is written.
    /// </summary>
    private void KeepPackingAcrossRouting(ulong logits, long logitCount, ulong ids, long idCount, ulong weights, long weightCount)
    {
        if (_lastPacking.Op == _ops - 1)
            _lastPacking.Op = Overlaps(logits, logitCount, _lastPacking.Source, _lastPacking.Count) || Overlaps(ids, idCount, _lastPacking.Source, _lastPacking.Count)
                || Overlaps(weights, weightCount, _lastPacking.Source, _lastPacking.Count) ? -1 : _ops;
        if (_lastPackable.Op == _ops - 1 && !Overlaps(logits, logitCount, _lastPackable.Output, _lastPackable.Count)
            && !Overlaps(ids, idCount, _lastPackable.Output, _lastPackable.Count) && !Overlaps(weights, weightCount, _lastPackable.Output, _lastPackable.Count))
            _lastPackable.Op = _ops;
    }

    /// <summary>Frees the routing counter (from <see cref="Dispose"/>).</summary>
    private void DisposeRouterRouting() => _routeCounter?.Dispose();
}
