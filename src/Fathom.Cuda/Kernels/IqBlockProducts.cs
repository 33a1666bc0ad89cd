using Fathom.Cuda.Driver;
using Fathom.Quants;

namespace Fathom.Cuda.Kernels;

/// <summary>
/// The IQ1_S and IQ2_XXS one-token products with a thread per 256-weight block (Kernels/matvec_iq.cu's block tiles
/// <c>matvec_iqb_T</c>, <c>group_matvec_iqb_T</c>, and row pairs <c>matvec_iqp_T</c>, <c>group_matvec_iqp_T</c>, which
/// give the block tiles' results bit for bit): the operands of <see cref="QuantizedMatVec.Launch"/> and
/// <see cref="QuantizedMatVec.LaunchSets"/> (the same packed activations), no layout. Each row's blocks are added in order
/// from the first, as the CPU's scalar dot adds them, so a row is not bit-equal to <c>matvec_q_T</c>'s (which adds in
/// lane order) and a matrix gives the same row alone and in a group.
/// </summary>
public static class IqBlockProducts
{
    /// <summary>Rows per item of the block tiles (matvec_iq.cu's IQB_ROWS): a block's tile holds one item's rows.</summary>
    public const int RowsPerItem = 32;

    /// <summary>Rows per item of the row pairs (IQP_ROWS): two per thread of a warp.</summary>
    public const int RowPairRowsPerItem = 64;

    /// <summary>Whether <paramref name="kernels"/> is one of these kernels (<see cref="IqProductKernels.BlockTiles"/>, <see cref="IqProductKernels.RowPairs"/>).</summary>
    public static bool Takes(IqProductKernels kernels) => kernels is IqProductKernels.BlockTiles or IqProductKernels.RowPairs;

    private static int ItemRows(IqProductKernels kernels) => kernels switch
    {
        IqProductKernels.BlockTiles => RowsPerItem,
        IqProductKernels.RowPairs => RowPairRowsPerItem,
        _ => throw new ArgumentOutOfRangeException(nameof(kernels), kernels, "not a block-tile kernel"),
    };

    private static string Prefix(IqProductKernels kernels) => kernels == IqProductKernels.RowPairs ? "iqp_" : "iqb_";

    /// <summary>Threads per block (IQB_THREADS).</summary>
    public const int Threads = 128;

    /// <summary>
    /// Blocks a multiprocessor keeps resident: 34–39 KB of shared memory each (the grid, two tiles, the blocks'
    /// contributions), so five fit in an H200 multiprocessor's 228 KB, and the kernels' launch bounds allow four at
    /// their register use (120–127 registers); the launch is sized for this many.
    /// </summary>
    public const int BlocksPerMultiprocessor = 4;

    /// <summary>
    /// The kernels a launch of <paramref name="matrices"/> matrices of <paramref name="rows"/> rows takes under
    /// <paramref name="setting"/>: the row pairs only when their 64-row items fill at least 7/8 of a residency of blocks
    /// (R1's sixteen gates and ups, 512 items, and eight downs, 896, on an H200's 528); else the block tiles, whose
    /// 32-row items are twice as many (run iqx-1: the row pairs 1.13–1.16× faster on the former, 0.5–0.8× on launches of
    /// half a residency or less). Both give the same bits, so the choice never changes a result.
    /// </summary>
    public static IqProductKernels For(IqProductKernels setting, int rows, int matrices, int multiprocessors) =>
        setting == IqProductKernels.RowPairs && 8 * Items(rows, matrices, IqProductKernels.RowPairs) < 7L * Math.Max(1, multiprocessors) * BlocksPerMultiprocessor
            ? IqProductKernels.BlockTiles
            : setting;

    /// <summary>
    /// <see cref="For(IqProductKernels, int, int, int)"/> for a launch of <paramref name="type"/>, except that IQ2_XXS
    /// takes the block tiles under the row-pair setting at every size: their one-thread-per-block IQ2_XXS products beat
    /// the row pairs on R1's grouped downs (8 × 7168×2048: run iqx-1 30.14 against 32.53 µs, run iqk-1 30.11 against
    /// 35.77) and on every single matrix run iqk-1 timed (0.71–0.90×).
    /// </summary>
    public static IqProductKernels For(GgmlType type, IqProductKernels setting, int rows, int matrices, int multiprocessors) =>
        type == GgmlType.IQ2_XXS && setting == IqProductKernels.RowPairs ? IqProductKernels.BlockTiles : For(setting, rows, matrices, multiprocessors);

    /// <summary>Whether <paramref name="type"/> has these kernels (IQ1_S, IQ2_XXS).</summary>
    public static bool Supports(GgmlType type) => type is GgmlType.IQ1_S or GgmlType.IQ2_XXS;

    /// <summary>Items (runs of the kernels' rows per item) of <paramref name="matrices"/> matrices of <paramref name="rows"/> rows.</summary>
    public static long Items(int rows, int matrices, IqProductKernels kernels = IqProductKernels.BlockTiles) =>
        (long)(rows + ItemRows(kernels) - 1) / ItemRows(kernels) * matrices;

    /// <summary>
    /// Items per block and blocks: every block takes as many whole items as the busiest one must (the fewest over about
    /// <paramref name="multiprocessors"/> × <see cref="BlocksPerMultiprocessor"/> blocks), so no block waits on a longer one.
    /// <paramref name="maxBlocks"/> caps the blocks (tests make blocks take several items so).
    /// </summary>
    public static (int ItemsPerBlock, uint Blocks) Split(long items, int multiprocessors, uint? maxBlocks = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(items, 1);
        long resident = Math.Min((long)Math.Max(1, multiprocessors) * BlocksPerMultiprocessor, maxBlocks ?? long.MaxValue);
        long perBlock = (items + Math.Max(1, resident) - 1) / Math.Max(1, resident);
        return (checked((int)perBlock), checked((uint)((items + perBlock - 1) / perBlock)));
    }

    private static string Suffix(GgmlType type) => Supports(type) ? CudaKernels.KernelSuffix(type)! : throw new NotSupportedException($"weight type {type} has no block-tile one-token product");

    /// <summary>
    /// Queues <c>matvec_iqb_T</c> or <c>matvec_iqp_T</c> (<paramref name="kernels"/>): <c>y[r] = W[r] · x</c> for the activations packed at <paramref name="packed"/>
    /// (<paramref name="columns"/> values), plus <c>bias[r]</c> when <paramref name="bias"/> is nonzero, added to what
    /// <paramref name="y"/> held with <paramref name="accumulate"/>.
    /// </summary>
    public static void Launch(CudaContext context, CudaKernels compiled, GgmlType type, string name, ulong weights, long rowBytes,
        ulong packed, ulong y, int rows, int columns, ulong bias = 0, bool accumulate = false, uint? maxBlocks = null,
        IqProductKernels kernels = IqProductKernels.RowPairs)
    {
        CheckShape(type, rows, columns, rowBytes);
        (int perBlock, uint blocks) = Split(Items(rows, 1, kernels), context.Device.Multiprocessors, maxBlocks);
        new KernelArguments().Pointer(weights).Long(rowBytes).Pointer(packed).Pointer(packed + (ulong)QuantizedMatVec.ScalesOffset(columns)).Pointer(y)
            .Int(rows).Int(columns).Pointer(bias).Int(accumulate ? 1 : 0).Int(perBlock)
            .Launch(context, compiled.Function("matvec_" + Prefix(kernels) + Suffix(type)), name, blocks, 1, Threads);
    }

    /// <summary>
    /// Queues <c>group_matvec_iqb_T</c> or <c>group_matvec_iqp_T</c> (<paramref name="kernels"/>) over <paramref name="sets"/> × <paramref name="count"/> matrices, with the
    /// operands and matrix choice of <see cref="QuantizedMatVec.LaunchSets"/>.
    /// </summary>
    public static void LaunchSets(CudaContext context, CudaKernels compiled, GgmlType type, string name, ulong table, int sets, ulong ids, int matrixCount,
        long rowBytes, ulong packed, long packedCount, long inputStride, ulong y, long outputStride, int rows, int columns, int count, uint? maxBlocks = null,
        IqProductKernels kernels = IqProductKernels.RowPairs)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sets, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        CheckShape(type, rows, columns, rowBytes);
        int matrices = checked(count * sets);
        (int perBlock, uint blocks) = Split(Items(rows, matrices, kernels), context.Device.Multiprocessors, maxBlocks);
        new KernelArguments().Pointer(table).Pointer(ids).Int(matrixCount).Long(rowBytes)
            .Pointer(packed).Pointer(packed + (ulong)QuantizedMatVec.ScalesOffset(packedCount)).Long(inputStride).Pointer(y).Long(outputStride)
            .Int(rows).Int(columns).Int(count).Int(matrices).Int(perBlock)
            .Launch(context, compiled.Function("group_matvec_" + Prefix(kernels) + Suffix(type)), name, blocks, 1, Threads);
    }

    /// <summary>The kernels read whole 256-weight blocks from rows of at least that many bytes, 2-byte aligned; at least one row.</summary>
    private static void CheckShape(GgmlType type, int rows, int columns, long rowBytes)
    {
        WeightFormat format = TypeTraits.For(type);
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        if (columns <= 0 || columns % format.Layout.BlockSize != 0 || rowBytes < format.Layout.RowBytes(columns) || rowBytes % 2 != 0)
            throw new ArgumentException($"{type}: {columns} columns in rows of {rowBytes} bytes are not whole packed blocks", nameof(columns));
    }
}
