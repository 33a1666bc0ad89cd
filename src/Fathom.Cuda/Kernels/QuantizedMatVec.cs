using Fathom.Cuda.Driver;
using Fathom.Quants;

namespace Fathom.Cuda.Kernels;

/// <summary>
/// The one-token integer products of Kernels/matvec_q.cu (<c>matvec_q_T</c>, <c>group_matvec_q_T</c>,
/// <c>stacked_matvec_q_T</c>; for IQ1_S and
/// IQ2_XXS also Kernels/matvec_iq.cu's, with the grid in shared memory): which weight
/// types have one, how a row is cut into pieces of work, and the packed activations they read (int8 codes, then one
/// float scale per block of the partner format, as <c>pack_activations_q8_0</c> / <c>_q8_k</c> write them).
/// </summary>
public static class QuantizedMatVec
{
    /// <summary>
    /// A type's kernels, weights per block, pieces per block (one thread each) and the weight alignment its loads need;
    /// for IQ1_S and IQ2_XXS also the kernels with the grid in shared memory (Kernels/matvec_iq.cu), which give the same
    /// results bit for bit.
    /// </summary>
    private readonly record struct Shape(string Kernel, string GroupKernel, int BlockWeights, int Pieces, int Alignment,
        string? SharedGridKernel = null, string? SharedGridGroupKernel = null, string? FastKernel = null, int FastPieces = 0);

    private static Shape? ShapeOf(GgmlType type) => type switch
    {
        GgmlType.Q4_0 => new("matvec_q_q4_0", "group_matvec_q_q4_0", 32, 4, 2),
        GgmlType.Q5_0 => new("matvec_q_q5_0", "group_matvec_q_q5_0", 32, 4, 2),
        GgmlType.Q8_0 => new("matvec_q_q8_0", "group_matvec_q_q8_0", 32, 4, 2),
        // 16-byte loads in 144- and 176-byte blocks: the matrix must start 16-byte aligned.
        GgmlType.Q4_K => new("matvec_q_q4_k", "group_matvec_q_q4_k", 256, 8, 16, FastKernel: "matvec_qk_q4_k", FastPieces: 4),
        GgmlType.Q5_K => new("matvec_q_q5_k", "group_matvec_q_q5_k", 256, 8, 16),
        GgmlType.Q6_K => new("matvec_q_q6_k", "group_matvec_q_q6_k", 256, 16, 2, FastKernel: "matvec_qk_q6_k", FastPieces: 4),
        GgmlType.IQ2_XXS => new("matvec_q_iq2_xxs", "group_matvec_q_iq2_xxs", 256, 8, 2, "matvec_iq_iq2_xxs", "group_matvec_iq_iq2_xxs"),
        GgmlType.IQ1_S => new("matvec_q_iq1_s", "group_matvec_q_iq1_s", 256, 8, 2, "matvec_iq_iq1_s", "group_matvec_iq_iq1_s"),
        _ => null,
    };

    /// <summary>Whether <paramref name="type"/> has an integer one-token product.</summary>
    public static bool Supports(GgmlType type) => ShapeOf(type) is not null;

    /// <summary>
    /// Whether <paramref name="type"/> has kernels with its grid in shared memory (matvec_iq.cu: IQ1_S, IQ2_XXS), which
    /// the launches below take when asked for <c>sharedGrids</c>.
    /// </summary>
    public static bool HasSharedGridKernels(GgmlType type) => ShapeOf(type)?.SharedGridKernel is not null;

    /// <summary>
    /// Blocks of <see cref="Threads"/> a shared-grid launch keeps resident per multiprocessor (matmul.cu's
    /// MATVEC_BLOCKS_PER_SM): its grid is about this many blocks per multiprocessor in all, each looping over row groups,
    /// so each block's copy of the grid serves many rows.
    /// </summary>
    public const int SharedGridBlocksPerMultiprocessor = 8;

    /// <summary>
    /// Blocks per matrix of a shared-grid launch of <paramref name="matrices"/> matrices in <paramref name="layout"/>:
    /// the row groups, at most one residency of blocks (<paramref name="multiprocessors"/> ×
    /// <see cref="SharedGridBlocksPerMultiprocessor"/>) shared between the matrices, at least one.
    /// </summary>
    public static uint SharedGridBlocks(MatVecLayout layout, int rows, int matrices, int multiprocessors)
    {
        long resident = (long)Math.Max(1, multiprocessors) * SharedGridBlocksPerMultiprocessor;
        long perMatrix = Math.Max(1, (resident + matrices - 1) / matrices);
        return (uint)Math.Min(layout.Blocks(rows), perMatrix);
    }

    /// <summary>Whether a matrix at <paramref name="pointer"/> with rows of <paramref name="rowBytes"/> meets the kernel's load alignment.</summary>
    public static bool Aligned(GgmlType type, ulong pointer, long rowBytes) =>
        ShapeOf(type) is Shape s && pointer % (ulong)s.Alignment == 0 && rowBytes % s.Alignment == 0;

    /// <summary>Threads per block of the integer kernels (matvec_q.cu's MATVEC_Q_THREADS).</summary>
    public const int Threads = 128;

    /// <summary>The most rows one thread works on (matvec_q.cu's MATVEC_Q_MAX_ROWS).</summary>
    public const int MaxRowsPerThread = 4;

    /// <summary>
    /// Threads a launch should keep busy before a thread takes more rows: an H200's 132 multiprocessors at four
    /// blocks of <see cref="Threads"/> each (run 35's sweep: more rows per thread pays from there on; at eight blocks'
    /// worth the long-row products ran one row per thread and lost 10–30 %).
    /// </summary>
    private const long ResidentThreads = 132L * 4 * Threads;

    /// <summary>The most weights the lanes of one row take per round (run 35's sweep: wider rounds of 4-bit blocks lost).</summary>
    private const int MaxWeightsPerRound = 2048;

    /// <summary>Pieces of work (one thread each per round) in a row of <paramref name="columns"/> weights.</summary>
    public static long PiecesPerRow(GgmlType type, int columns)
    {
        Shape s = ShapeOf(type) ?? throw Unsupported(type);
        return (long)columns / s.BlockWeights * s.Pieces;
    }

    /// <summary>
    /// Every layout a <paramref name="type"/> product can run with: lanes from the type's pieces per block to
    /// <see cref="Threads"/> in powers of two, each with 1, 2 or 4 rows per thread.
    /// </summary>
    public static IEnumerable<MatVecLayout> Layouts(GgmlType type)
    {
        Shape s = ShapeOf(type) ?? throw Unsupported(type);
        for (int lanes = s.Pieces; lanes <= Threads; lanes *= 2)
            for (int rowsPerThread = 1; rowsPerThread <= MaxRowsPerThread; rowsPerThread *= 2)
                yield return new MatVecLayout(lanes, rowsPerThread);
    }

    /// <summary>
    /// The layout of a launch over <paramref name="rows"/> rows in all (a group's matrices together) of
    /// <paramref name="columns"/>: lanes doubled from the type's pieces per block while a row still takes at least two
    /// rounds and a round at most <see cref="MaxWeightsPerRound"/> weights (so each thread keeps several loads of its
    /// row in flight), then as many rows per thread as keep at least <see cref="ResidentThreads"/> threads. The lanes
    /// depend on the type and the row width only, so a matrix gives the same sums alone and in a group. Chosen from
    /// the sweep of every layout in `fathom bench --gpu-kernels` (run 35, docs/gpu-notes.md): within 10 % of the
    /// fastest layout on 35 of the 36 shapes timed, where the earlier rule (a row's pieces in one round) was 10–30 %
    /// slower on most.
    /// </summary>
    public static MatVecLayout LayoutFor(GgmlType type, long rows, int columns)
    {
        Shape s = ShapeOf(type) ?? throw Unsupported(type);
        long pieces = PiecesPerRow(type, columns);
        int weightsPerPiece = s.BlockWeights / s.Pieces;
        int lanes = s.Pieces;
        while (lanes < Threads && pieces / (2L * lanes) >= 2 && 2 * lanes * weightsPerPiece <= MaxWeightsPerRound) lanes *= 2;
        return new MatVecLayout(lanes, RowsPerThreadFor(rows, lanes, ResidentThreads));
    }

    /// <summary>Rounds a row takes in <see cref="SharedGridLayoutFor"/>'s layouts (when it has that many blocks' pieces).</summary>
    public const int SharedGridRounds = 8;

    /// <summary>
    /// The layout of a shared-grid launch (<see cref="HasSharedGridKernels"/>) over <paramref name="rows"/> rows in all:
    /// lanes for about <see cref="SharedGridRounds"/> rounds per row (fewer lanes than the earlier one-round rule: on the
    /// H200, R1's grouped IQ1_S products ran 15–20 % faster so), from the row width alone, so a group adds each row's
    /// blocks as its one-matrix product does; then as many rows per thread as keep <see cref="ResidentThreads"/> threads,
    /// half an eight-block residency (the blocks loop over row groups, so a launch need not fill the GPU with threads:
    /// R1's IQ1_S downs, 8 × 7168 rows in 8 lanes, ran 13 % faster with 4 rows per thread than with 2).
    /// </summary>
    public static MatVecLayout SharedGridLayoutFor(GgmlType type, long rows, int columns)
    {
        Shape s = ShapeOf(type) ?? throw Unsupported(type);
        long pieces = PiecesPerRow(type, columns);
        int lanes = s.Pieces;
        while (lanes < Threads && (long)lanes * SharedGridRounds < pieces) lanes *= 2;
        return new MatVecLayout(lanes, RowsPerThreadFor(rows, lanes, ResidentThreads));
    }

    /// <summary>As many rows per thread (4, 2, 1) as keep at least <paramref name="threads"/> threads.</summary>
    private static int RowsPerThreadFor(long rows, int lanes, long threads)
    {
        int rowsPerThread = MaxRowsPerThread;
        while (rowsPerThread > 1 && (rows + rowsPerThread - 1) / rowsPerThread * lanes < threads) rowsPerThread /= 2;
        return rowsPerThread;
    }

    /// <summary>The layout a launch takes when none is given: <see cref="SharedGridLayoutFor"/>'s for the shared-grid kernels, else <see cref="LayoutFor"/>'s.</summary>
    public static MatVecLayout DefaultLayout(GgmlType type, long rows, int columns, bool sharedGrids) =>
        sharedGrids && HasSharedGridKernels(type) ? SharedGridLayoutFor(type, rows, columns) : LayoutFor(type, rows, columns);

    /// <summary>
    /// Whether <paramref name="type"/> has the fast kernels (matvec_q.cu's <c>matvec_qk_T</c>, <c>stacked_matvec_qk_T</c>,
    /// <c>group_matvec_qk_T</c>: Q4_K, Q6_K), which give the plain kernels' results bit for bit in the layout
    /// <see cref="FastLayoutFor"/> gives, and which the launches below take when asked for <c>fast</c>.
    /// </summary>
    public static bool HasFastKernels(GgmlType type) => ShapeOf(type)?.FastKernel is not null;

    /// <summary>The most rows one thread of a fast kernel works on (matvec_q.cu's MATVEC_QK_MAX_ROWS).</summary>
    public const int FastMaxRowsPerThread = 2;

    /// <summary>
    /// Every layout a fast kernel of <paramref name="type"/> runs: lanes from its pieces per block to <see cref="Threads"/>
    /// in powers of two, each with 1 or 2 rows per thread.
    /// </summary>
    public static IEnumerable<MatVecLayout> FastLayouts(GgmlType type)
    {
        Shape s = ShapeOf(type) ?? throw Unsupported(type);
        if (s.FastKernel is null) throw NoFastKernel(type);
        for (int lanes = s.FastPieces; lanes <= Threads; lanes *= 2)
            for (int rowsPerThread = 1; rowsPerThread <= FastMaxRowsPerThread; rowsPerThread *= 2)
                yield return new MatVecLayout(lanes, rowsPerThread);
    }

    /// <summary>
    /// The fast kernel's layout for the launch <see cref="LayoutFor"/> lays out: as many blocks per round as the plain
    /// kernel's (its lanes times the fast kernel's pieces per block over the plain one's: half for Q4_K, a quarter for
    /// Q6_K), so the fast
    /// kernel adds a row's blocks in the plain kernel's order; then as many rows per thread (2, 1) as keep
    /// <see cref="ResidentThreads"/> threads.
    /// </summary>
    public static MatVecLayout FastLayoutFor(GgmlType type, long rows, int columns)
    {
        Shape s = ShapeOf(type) ?? throw Unsupported(type);
        if (s.FastKernel is null) throw NoFastKernel(type);
        int lanes = LayoutFor(type, rows, columns).Lanes / s.Pieces * s.FastPieces;
        return new MatVecLayout(lanes, Math.Min(FastMaxRowsPerThread, RowsPerThreadFor(rows, lanes, ResidentThreads)));
    }

    /// <summary>Values per scale of a packed partner format (Q8_0: 32, Q8_K: 256).</summary>
    public static int PackedBlock(GgmlType activationType) => activationType switch
    {
        GgmlType.Q8_0 => 32,
        GgmlType.Q8_K => 256,
        _ => throw new NotSupportedException($"activation format {activationType} has no packed encoding"),
    };

    /// <summary>Where the scales of <paramref name="count"/> packed values start: after the codes, 16-byte aligned.</summary>
    public static long ScalesOffset(long count) => (count + 15) / 16 * 16;

    /// <summary>Bytes of <paramref name="count"/> values packed in <paramref name="activationType"/>: codes, then scales.</summary>
    public static long PackedBytes(GgmlType activationType, long count) => ScalesOffset(count) + count / PackedBlock(activationType) * sizeof(float);

    internal static string KernelName(GgmlType type) => (ShapeOf(type) ?? throw Unsupported(type)).Kernel;

    internal static string GroupKernelName(GgmlType type) => (ShapeOf(type) ?? throw Unsupported(type)).GroupKernel;

    internal static string PackKernelName(GgmlType activationType) => activationType switch
    {
        GgmlType.Q8_0 => "pack_activations_q8_0",
        GgmlType.Q8_K => "pack_activations_q8_k",
        _ => throw new NotSupportedException($"activation format {activationType} has no packed encoding"),
    };

    private static NotSupportedException Unsupported(GgmlType type) => new($"weight type {type} has no integer one-token product");

    private static NotSupportedException NoFastKernel(GgmlType type) => new($"weight type {type} has no fast one-token product");

    /// <summary>Whether a launch takes the fast kernels: asked for, the type has them, and no shared-grid kernel was asked for instead.</summary>
    private static bool TakesFast(GgmlType type, bool fast, bool sharedGrids) =>
        fast && HasFastKernels(type) && !(sharedGrids && HasSharedGridKernels(type));

    /// <summary>
    /// Queues <c>pack_activations_*</c>: <paramref name="count"/> floats at <paramref name="x"/> (a multiple of the
    /// format's block) encoded into <paramref name="packed"/> (<see cref="PackedBytes"/> bytes).
    /// </summary>
    public static void LaunchPack(CudaContext context, CudaKernels kernels, GgmlType activationType, ulong x, ulong packed, long count)
    {
        if (count % PackedBlock(activationType) != 0) throw new ArgumentException($"{count} values are not whole {activationType} blocks", nameof(count));
        new KernelArguments().Pointer(x).Pointer(packed).Pointer(packed + (ulong)ScalesOffset(count)).Long(count)
            .Launch(context, kernels.Function(PackKernelName(activationType)), "pack_activations",
                (uint)((count + CudaKernels.RoundingThreads - 1) / CudaKernels.RoundingThreads), 1, CudaKernels.RoundingThreads);
    }

    /// <summary>
    /// Queues <c>matvec_q_T</c>: <c>y[r] = W[r] · x</c> for the one activation row packed at <paramref name="packed"/>
    /// (<paramref name="columns"/> values), plus <c>bias[r]</c> when <paramref name="bias"/> is nonzero, added to what
    /// <paramref name="y"/> held with <paramref name="accumulate"/>; in <paramref name="layout"/> (else <see cref="DefaultLayout"/>'s).
    /// With <paramref name="sharedGrids"/>, a type with shared-grid kernels takes <c>matvec_iq_T</c> instead (same results).
    /// <paramref name="gridBlocks"/> caps a shared-grid launch's blocks (else <see cref="SharedGridBlocks"/>'s), so tests can make blocks loop.
    /// With <paramref name="fast"/>, a type with fast kernels takes <c>matvec_qk_T</c> (same results), in
    /// <paramref name="layout"/> as a layout of that kernel (else <see cref="FastLayoutFor"/>'s).
    /// </summary>
    public static void Launch(CudaContext context, CudaKernels kernels, GgmlType type, string name, ulong weights, long rowBytes,
        ulong packed, ulong y, int rows, int columns, ulong bias = 0, bool accumulate = false, MatVecLayout? layout = null,
        bool sharedGrids = false, uint? gridBlocks = null, bool fast = false)
    {
        bool takesFast = TakesFast(type, fast, sharedGrids);
        MatVecLayout l = takesFast ? CheckedFast(type, layout ?? FastLayoutFor(type, rows, columns))
            : Checked(type, layout ?? DefaultLayout(type, rows, columns, sharedGrids));
        (string kernel, uint blocks) = takesFast ? (ShapeOf(type)!.Value.FastKernel!, l.Blocks(rows))
            : KernelAndBlocks(context, type, grouped: false, l, rows, 1, sharedGrids, gridBlocks);
        new KernelArguments().Pointer(weights).Long(rowBytes).Pointer(packed).Pointer(packed + (ulong)ScalesOffset(columns)).Pointer(y)
            .Int(rows).Int(columns).Int(l.Lanes).Int(l.RowsPerThread).Pointer(bias).Int(accumulate ? 1 : 0)
            .Launch(context, kernels.Function(kernel), name, Math.Max(1u, blocks), 1, Threads);
    }

    /// <summary>Most matrices one <see cref="LaunchStacked"/> takes (<c>stacked_matvec_q_T</c>'s parameters).</summary>
    public const int MaxStacked = 3;

    /// <summary>One matrix of a stacked launch: its weights' device address, its bias's (0: none), its rows.</summary>
    public readonly record struct StackedMatrix(ulong Weights, ulong Bias, int Rows);

    /// <summary>
    /// Queues <c>stacked_matvec_q_T</c>: up to <see cref="MaxStacked"/> matrices of one type and width on the one
    /// activation row packed at <paramref name="packed"/>, matrix m's rows (plus its bias) into
    /// <c>y + m · outputStride</c>, in one launch. Each matrix's blocks are the ones its own <see cref="Launch"/> would
    /// run, in the lanes <see cref="LayoutFor"/> gives its width, so each output equals its one-matrix product bit for bit
    /// (the rows per thread, which follow the stack's rows in all, do not change a row's sums). With
    /// <paramref name="fast"/>, a type with fast kernels takes <c>stacked_matvec_qk_T</c> (same results), in
    /// <paramref name="layout"/> as a layout of that kernel (else <see cref="FastLayoutFor"/>'s).
    /// </summary>
    public static void LaunchStacked(CudaContext context, CudaKernels kernels, GgmlType type, string name, ReadOnlySpan<StackedMatrix> matrices,
        long rowBytes, ulong packed, int columns, ulong y, long outputStride, MatVecLayout? layout = null, bool fast = false)
    {
        if (matrices.Length is < 1 or > MaxStacked) throw new ArgumentException($"a stacked launch takes 1 to {MaxStacked} matrices, not {matrices.Length}", nameof(matrices));
        Shape s = ShapeOf(type) ?? throw Unsupported(type);
        long rows = 0;
        foreach (StackedMatrix m in matrices) rows += m.Rows;
        bool takesFast = TakesFast(type, fast, sharedGrids: false);
        MatVecLayout l = takesFast ? CheckedFast(type, layout ?? FastLayoutFor(type, rows, columns)) : Checked(type, layout ?? LayoutFor(type, rows, columns));
        StackedMatrix m0 = matrices[0], m1 = matrices.Length > 1 ? matrices[1] : default, m2 = matrices.Length > 2 ? matrices[2] : default;
        uint end0 = l.Blocks(m0.Rows), end1 = end0 + (matrices.Length > 1 ? l.Blocks(m1.Rows) : 0), total = end1 + (matrices.Length > 2 ? l.Blocks(m2.Rows) : 0);
        new KernelArguments().Pointer(m0.Weights).Pointer(m1.Weights).Pointer(m2.Weights).Pointer(m0.Bias).Pointer(m1.Bias).Pointer(m2.Bias)
            .Int(m0.Rows).Int(m1.Rows).Int(m2.Rows).Int((int)end0).Int((int)end1).Long(rowBytes)
            .Pointer(packed).Pointer(packed + (ulong)ScalesOffset(columns)).Pointer(y).Long(outputStride)
            .Int(columns).Int(l.Lanes).Int(l.RowsPerThread)
            .Launch(context, kernels.Function("stacked_" + (takesFast ? s.FastKernel : s.Kernel)), name, Math.Max(1u, total), 1, Threads);
    }

    /// <summary>
    /// Queues <c>group_matvec_q_T</c> over <paramref name="count"/> matrices: matrix <c>z</c> is
    /// <c>table[ids[z]]</c> (or <c>table[z]</c> without ids) applied to the packed values from
    /// <c>z · inputStride</c> (a multiple of the packed block) of the <paramref name="packedCount"/> packed at
    /// <paramref name="packed"/>, into <c>y + z · outputStride</c>; in <paramref name="layout"/> (else <see cref="LayoutFor"/>'s for
    /// all the group's rows).
    /// </summary>
    public static void LaunchGroup(CudaContext context, CudaKernels kernels, GgmlType type, string name, ulong table, ulong ids, int matrixCount,
        long rowBytes, ulong packed, long packedCount, long inputStride, ulong y, long outputStride, int rows, int columns, int count, MatVecLayout? layout = null,
        bool sharedGrids = false, uint? gridBlocks = null, bool fast = false) =>
        LaunchSets(context, kernels, type, name, table, 1, ids, matrixCount, rowBytes, packed, packedCount, inputStride, y, outputStride, rows, columns, count, layout,
            sharedGrids, gridBlocks, fast);

    /// <summary>
    /// Queues <c>group_matvec_q_T</c> over <paramref name="sets"/> × <paramref name="count"/> matrices: the table holds
    /// <paramref name="sets"/> runs of <paramref name="matrixCount"/> addresses (a MoE layer's gates, then its ups), and
    /// launch matrix <c>s · count + z</c> is <c>table[s · matrixCount + ids[z]]</c> (or <c>+ z</c> without ids), applied to
    /// the packed values from <c>z · inputStride</c>, into <c>y + (s · count + z) · outputStride</c>. With
    /// <paramref name="sharedGrids"/>, a type with shared-grid kernels takes <c>group_matvec_iq_T</c> (same results), its
    /// blocks per matrix capped by <paramref name="gridBlocks"/> when given (else <see cref="SharedGridBlocks"/>'s). With
    /// <paramref name="fast"/>, a type with fast kernels takes <c>group_matvec_qk_T</c> (same results), in
    /// <paramref name="layout"/> as a layout of that kernel (else <see cref="FastLayoutFor"/>'s).
    /// </summary>
    public static void LaunchSets(CudaContext context, CudaKernels kernels, GgmlType type, string name, ulong table, int sets, ulong ids, int matrixCount,
        long rowBytes, ulong packed, long packedCount, long inputStride, ulong y, long outputStride, int rows, int columns, int count, MatVecLayout? layout = null,
        bool sharedGrids = false, uint? gridBlocks = null, bool fast = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sets, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        bool takesFast = TakesFast(type, fast, sharedGrids);
        long allRows = (long)rows * count * sets;
        MatVecLayout l = takesFast ? CheckedFast(type, layout ?? FastLayoutFor(type, allRows, columns))
            : Checked(type, layout ?? DefaultLayout(type, allRows, columns, sharedGrids));
        int matrices = checked(count * sets);
        (string kernel, uint blocks) = takesFast ? ("group_" + ShapeOf(type)!.Value.FastKernel, l.Blocks(rows))
            : KernelAndBlocks(context, type, grouped: true, l, rows, matrices, sharedGrids, gridBlocks);
        new KernelArguments().Pointer(table).Pointer(ids).Int(matrixCount).Long(rowBytes)
            .Pointer(packed).Pointer(packed + (ulong)ScalesOffset(packedCount)).Long(inputStride).Pointer(y).Long(outputStride)
            .Int(rows).Int(columns).Int(l.Lanes).Int(l.RowsPerThread).Int(count)
            .Launch(context, kernels.Function(kernel), name, Math.Max(1u, blocks), 1, (uint)matrices, Threads, 0);
    }

    /// <summary>
    /// The kernel a launch takes (the shared-grid one when asked for and the type has it, else <c>matvec_q_T</c>; the
    /// group form when <paramref name="grouped"/>) and its blocks per matrix: the layout's row groups, for a shared-grid
    /// kernel at most <see cref="SharedGridBlocks"/>'s (and <paramref name="gridBlocks"/> when given).
    /// </summary>
    private static (string Kernel, uint Blocks) KernelAndBlocks(CudaContext context, GgmlType type, bool grouped, MatVecLayout layout, int rows, int matrices,
        bool sharedGrids, uint? gridBlocks)
    {
        Shape s = ShapeOf(type) ?? throw Unsupported(type);
        if (!sharedGrids || s.SharedGridKernel is null) return (grouped ? s.GroupKernel : s.Kernel, layout.Blocks(rows));
        uint blocks = Math.Min(gridBlocks ?? uint.MaxValue, SharedGridBlocks(layout, rows, matrices, context.Device.Multiprocessors));
        return (grouped ? s.SharedGridGroupKernel! : s.SharedGridKernel, blocks);
    }

    /// <summary>The layout, when the fast kernels can run it for <paramref name="type"/> (lanes a power of two from their pieces per block; 1 or 2 rows per thread).</summary>
    private static MatVecLayout CheckedFast(GgmlType type, MatVecLayout layout)
    {
        Shape s = ShapeOf(type) ?? throw Unsupported(type);
        int lanes = layout.Lanes, rowsPerThread = layout.RowsPerThread;
        if (lanes < s.FastPieces || lanes > Threads || (lanes & (lanes - 1)) != 0 || rowsPerThread is not (1 or 2))
            throw new ArgumentException($"{type}: no fast kernel layout of {lanes} lanes and {rowsPerThread} rows per thread", nameof(layout));
        return layout;
    }

    /// <summary>The layout, when the kernels can run it for <paramref name="type"/> (lanes a power of two from the type's pieces per block).</summary>
    private static MatVecLayout Checked(GgmlType type, MatVecLayout layout)
    {
        Shape s = ShapeOf(type) ?? throw Unsupported(type);
        int lanes = layout.Lanes, rowsPerThread = layout.RowsPerThread;
        if (lanes < s.Pieces || lanes > Threads || (lanes & (lanes - 1)) != 0 || rowsPerThread is not (1 or 2 or 4))
            throw new ArgumentException($"{type}: no kernel layout of {lanes} lanes and {rowsPerThread} rows per thread", nameof(layout));
        return layout;
    }
}
