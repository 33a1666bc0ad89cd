using Fathom.Cuda.Kernels;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// MLA's rotations of a pass in one launch (<see cref="RopeQueriesThenStoreWithRows"/>, Kernels/ops.cu
/// <c>rope_queries_and_key</c>): the queries' rotary slices, rotated in place and copied beside their absorbed parts,
/// and the shared key's rotation with its cache row and the latent's, as <see cref="RopeStoreWithRows"/> launches them.
/// It replaces a DeepSeek2 layer's query <c>rope</c> and the <c>copy_rows</c> of the rotated slices; the values are the
/// same floats (one rotation's arithmetic, copies).
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>Launches of <c>rope_queries_and_key</c> so far.</summary>
    public long FusedMlaRotations { get; private set; }

    public void RopeQueriesThenStoreWithRows(Rope rope, Span<float> queries, int queryHeads, int queryRowStride, int queryHeadStride, int queryOffset,
        Span<float> rotatedQueries, int rotatedStride,
        Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition,
        int storeOffset, int storeWidth, Span<float> destination, int destinationStride,
        ReadOnlySpan<float> rowSource, int rowSourceStride, Span<float> rowDestination, int rowDestinationStride, int rowWidth)
    {
        ArgumentNullException.ThrowIfNull(rope);
        if (FusedMlaRotation(rope, queries, queryHeads, queryRowStride, queryHeadStride, queryOffset, rotatedQueries, rotatedStride,
                values, tokens, heads, rowStride, headStride, offset, firstPosition, storeOffset, storeWidth, destination, destinationStride,
                rowSource, rowSourceStride, rowDestination, rowDestinationStride, rowWidth))
            return;
        Rope(rope, queries, tokens, queryHeads, queryRowStride, queryHeadStride, queryOffset, firstPosition);
        if (tokens > 0 && queryHeads > 0)
            CopyRows(queries[queryOffset..], queryHeadStride, rotatedQueries, rotatedStride, tokens * queryHeads, rope.Dimensions);
        RopeStoreWithRows(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition, storeOffset, storeWidth, destination, destinationStride,
            rowSource, rowSourceStride, rowDestination, rowDestinationStride, rowWidth);
    }

    /// <summary>
    /// Queues <c>rope_queries_and_key</c> when <see cref="FusedDecode"/> and <see cref="FusedSmallOps"/> are on, the key
    /// is one head stored whole (MLA's shared key), the query rows are whole heads, every operand is attached, and
    /// <see cref="RopeStoreWithRows"/> would fuse its stores; false, with nothing queued, otherwise.
    /// </summary>
    private bool FusedMlaRotation(Rope rope, Span<float> queries, int queryHeads, int queryRowStride, int queryHeadStride, int queryOffset,
        Span<float> rotatedQueries, int rotatedStride,
        Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition,
        int storeOffset, int storeWidth, Span<float> destination, int destinationStride,
        ReadOnlySpan<float> rowSource, int rowSourceStride, Span<float> rowDestination, int rowDestinationStride, int rowWidth)
    {
        int dims = rope.Dimensions;
        // The kernel's single key head (MLA's shared key), stored whole; query rows of whole heads.
        if (heads != 1 || storeOffset != offset || storeWidth != dims || (long)queryHeads * queryHeadStride != queryRowStride)
            return false;
        if (!FusedDecode || !FusedSmallOps || tokens <= 0 || queryHeads <= 0 || rowWidth <= 0 || dims % 2 != 0
            || queryRowStride < 0 || queryHeadStride < 0 || queryOffset < 0 || rotatedStride < dims || rowStride < 0 || headStride < 0 || offset < 0
            || rowSourceStride < 0 || rowDestinationStride < 0)
            return false;
        long queryExtent = (long)(tokens - 1) * queryRowStride + (long)(queryHeads - 1) * queryHeadStride + queryOffset + dims;
        long rotatedExtent = ((long)tokens * queryHeads - 1) * rotatedStride + dims;
        long keyExtent = (long)(tokens - 1) * rowStride + (long)(heads - 1) * headStride + offset + dims;
        long sourceExtent = (long)(tokens - 1) * rowSourceStride + rowWidth, rowExtent = ((long)firstPosition + tokens - 1) * rowDestinationStride + rowWidth;
        if (queries.Length < queryExtent || rotatedQueries.Length < rotatedExtent || values.Length < keyExtent
            || rowSource.Length < sourceExtent || rowDestination.Length < rowExtent)
            return false;
        if (!TryResident(queries[..(int)queryExtent], out ulong q) || !TryResident(rotatedQueries[..(int)rotatedExtent], out ulong rotated)
            || !TryResident(values[..(int)keyExtent], out ulong key) || !TryResident(rowSource[..(int)sourceExtent], out ulong rowFrom)
            || !TryResident(rowDestination, out ulong rowTo)
            || !FusedKeyStore(rope, tokens, heads, headStride, offset, firstPosition, storeOffset, storeWidth, destination, destinationStride, out ulong to))
            return false;

        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("Rope (queries, key and stores)");
        int half = dims / 2;
        DeviceRopeTable table = RopeTable(rope);
        ulong cos = table.Covering(firstPosition + tokens);
        ulong sin = cos + (ulong)table.Positions * (ulong)half * sizeof(float);
        (ulong step, int position) = StepPosition(firstPosition);
        int rowBlocks = (rowWidth + 4 * RopeThreads - 1) / (4 * RopeThreads); // the rope kernel's chunk per row block
        new KernelArguments().Pointer(q).Int(queryHeads).Int(queryHeadStride).Int(queryOffset).Pointer(rotated).Int(rotatedStride)
            .Pointer(key).Pointer(cos).Pointer(sin).Pointer(step).Int(position).Int(half).Int(rowStride).Int(offset).Int(rope.Style == RopeStyle.Normal ? 0 : 1)
            .Pointer(to).Int(destinationStride)
            .Pointer(rowFrom).Int(rowSourceStride).Pointer(rowTo).Int(rowDestinationStride).Int(rowWidth)
            .Launch(_context, _kernels.Function("rope_queries_and_key"), "rope_queries_and_key", (uint)tokens, (uint)(queryHeads + 1 + rowBlocks), RopeThreads);
        FusedMlaRotations++;
        return true;
    }
}
