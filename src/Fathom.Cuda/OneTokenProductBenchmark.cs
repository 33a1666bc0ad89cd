using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cuda;

/// <summary>
/// One type and shape's one-token product times: the float kernel (<c>matvec_T</c> / <c>group_matvec_T</c>) and the
/// integer one the backend takes (<see cref="CudaBackend.IqProducts"/> for IQ1_S and IQ2_XXS, else <c>matvec_q_T</c> /
/// <c>group_matvec_q_T</c>), with every layout of the layout-taking kernels; for IQ1_S and IQ2_XXS all four of their
/// kernels (row pairs, block tiles, shared grid, global grid) in the same run; for types with fast kernels (Q4_K, Q6_K)
/// <c>matvec_q_T</c> and <c>matvec_qk_T</c> in the same run.
/// </summary>
/// <param name="Matrices">Matrices per launch: 1, or a grouped product's (a token's experts).</param>
/// <param name="WeightBytes">Bytes of the launch's matrices, all read once per product.</param>
/// <param name="FloatMicroseconds">Per product with the float kernel on activations rounded to floats.</param>
/// <param name="IntegerMicroseconds">Per product with the integer kernel the backend takes, on packed activations (in <paramref name="Layout"/> when it takes one); NaN for types without one.</param>
/// <param name="Layout">The layout <c>matvec_q_T</c> (or, for IQ1_S and IQ2_XXS, the shared-grid <c>matvec_iq_T</c>) takes for this shape (<see cref="QuantizedMatVec.DefaultLayout"/>).</param>
/// <param name="Layouts">Every layout's time per product (µs) of that kernel, the picked one included; empty for types without an integer kernel.</param>
/// <param name="GlobalGridLayouts">For IQ1_S and IQ2_XXS: every layout's time with <c>matvec_q_T</c>'s global-memory lookups; else empty.</param>
/// <param name="BlockTileMicroseconds">For IQ1_S and IQ2_XXS: per product with the block-tile kernel (<see cref="IqBlockProducts"/>); else NaN.</param>
/// <param name="RowPairMicroseconds">For IQ1_S and IQ2_XXS: per product with the row-pair kernel (<see cref="IqProductKernels.RowPairs"/>); else NaN.</param>
/// <param name="Kernels">The IQ kernels the backend takes for this launch (<see cref="CudaBackend.IqProducts"/>, through <see cref="IqBlockProducts.For(GgmlType, IqProductKernels, int, int, int)"/>), which <paramref name="IntegerMicroseconds"/> timed for IQ1_S and IQ2_XXS.</param>
/// <param name="FastMicroseconds">For types with fast kernels (<see cref="QuantizedMatVec.HasFastKernels"/>): per product with <c>matvec_qk_T</c> / <c>group_matvec_qk_T</c> in <paramref name="FastLayout"/>; else NaN. <paramref name="IntegerMicroseconds"/> is then <c>matvec_q_T</c>'s, the kernel it replaces.</param>
/// <param name="FastLayout">The layout the fast kernel takes for this shape (<see cref="QuantizedMatVec.FastLayoutFor"/>).</param>
/// <param name="FastLayouts">Every fast layout's time per product (µs); null for types without fast kernels.</param>
public readonly record struct OneTokenProductTiming(GgmlType Type, int Rows, int Columns, int Matrices, long WeightBytes, double FloatMicroseconds,
    double IntegerMicroseconds, MatVecLayout Layout, IReadOnlyList<(MatVecLayout Layout, double Microseconds)> Layouts,
    IReadOnlyList<(MatVecLayout Layout, double Microseconds)> GlobalGridLayouts, double BlockTileMicroseconds = double.NaN,
    IqProductKernels Kernels = IqProductKernels.RowPairs, double RowPairMicroseconds = double.NaN, double FastMicroseconds = double.NaN,
    MatVecLayout FastLayout = default, IReadOnlyList<(MatVecLayout Layout, double Microseconds)>? FastLayouts = null)
{
    /// <summary>Weight bytes read per second, in GB/s (10⁹ bytes), for a time per product in µs.</summary>
    public double GigabytesPerSecond(double microseconds) => WeightBytes / microseconds / 1e3;

    /// <summary>The fastest layout and its time (the picked one when there are no others).</summary>
    public (MatVecLayout Layout, double Microseconds) Best =>
        Layouts.Count == 0 ? (Layout, IntegerMicroseconds) : Layouts.MinBy(l => l.Microseconds);
}

/// <summary>
/// Times each type's one-token product kernels on the GPU with CUDA events over many repetitions: the float kernel and
/// the integer kernel in every layout in the same run, on the same weights (random bytes: every bit pattern is a valid
/// block, and the speed does not depend on the values). Repetitions cycle through copies of the matrices that together
/// exceed the L2 cache several times, so every product reads its weights from device memory, as a decode step does.
/// Grouped products (a token's experts) read one input for all their matrices, as a MoE layer's gate and up do.
/// </summary>
public static class OneTokenProductBenchmark
{
    /// <summary>Copies of a launch's matrices cycled through: at least this many bytes (the H200's L2 holds 50 MB).</summary>
    private const long RotationBytes = 256L << 20;

    /// <summary>Times single-matrix products of each type and shape.</summary>
    public static IReadOnlyList<OneTokenProductTiming> Run(CudaBackend backend, IEnumerable<GgmlType> types, IEnumerable<(int Rows, int Columns)> shapes, int repetitions) =>
        [.. from shape in shapes from type in types select Time(backend, type, shape.Rows, shape.Columns, 1, repetitions)];

    /// <summary>Times grouped products: each entry's <c>Matrices</c> matrices of one type and shape in one launch.</summary>
    public static IReadOnlyList<OneTokenProductTiming> RunGrouped(CudaBackend backend, IEnumerable<(GgmlType Type, int Rows, int Columns, int Matrices)> groups, int repetitions) =>
        [.. from g in groups select Time(backend, g.Type, g.Rows, g.Columns, g.Matrices, repetitions)];

    private static OneTokenProductTiming Time(CudaBackend backend, GgmlType type, int rows, int columns, int matrices, int repetitions)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(repetitions, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(matrices, 1);
        CudaContext context = backend.Context;
        CudaKernels kernels = backend.Kernels;
        context.MakeCurrent();
        WeightFormat format = TypeTraits.For(type);
        if (columns % format.Layout.BlockSize != 0) throw new ArgumentException($"{columns} columns are not whole {type} blocks");
        long rowBytes = format.Layout.RowBytes(columns), bytes = rowBytes * rows, stride = (bytes + 255) / 256 * 256;
        int copies = (int)Math.Clamp(RotationBytes / (stride * matrices), 2, 4096);
        using var weights = new DeviceBuffer(context, stride * matrices * copies);
        var random = new Random(HashCode.Combine(type, rows, columns));
        var host = new byte[bytes];
        random.NextBytes(host);
        for (int c = 0; c < matrices * copies; c++) weights.Upload<byte>(host, c * stride);
        // Copy c's matrix table: the addresses of its `matrices` matrices.
        var addresses = new ulong[matrices * copies];
        for (int i = 0; i < addresses.Length; i++) addresses[i] = weights.Pointer + (ulong)(i * stride);
        using var tables = new DeviceBuffer(context, (long)addresses.Length * sizeof(ulong));
        tables.Upload<ulong>(addresses);
        ulong Matrix(int copy) => weights.Pointer + (ulong)(copy * matrices * stride);
        ulong Table(int copy) => tables.Pointer + (ulong)(copy * matrices * sizeof(ulong));

        float[] input = new float[columns];
        for (int i = 0; i < columns; i++) input[i] = (float)(random.NextDouble() * 2 - 1);
        GgmlType activation = format.DotActivationType;
        using var x = new DeviceBuffer(context, columns * sizeof(float));
        using var rounded = new DeviceBuffer(context, columns * sizeof(float));
        using var y = new DeviceBuffer(context, (long)matrices * rows * sizeof(float));
        x.Upload<float>(input);
        if (kernels.RoundActivations(activation) is { } round)
            new KernelArguments().Pointer(x.Pointer).Pointer(rounded.Pointer).Long(columns)
                .Launch(context, round, "round_activations", (uint)((columns + CudaKernels.RoundingThreads - 1) / CudaKernels.RoundingThreads), 1, CudaKernels.RoundingThreads);
        int split = CudaKernels.MatMulSplit(columns);
        double floatTime = matrices == 1
            ? Time(context, repetitions, copies, c => kernels.LaunchMatMul(context, type, "matvec", Matrix(c), rowBytes, rounded.Pointer, y.Pointer, rows, columns, 1, split, vector: true))
            : Time(context, repetitions, copies, c => LaunchFloatGroup(context, kernels, type, Table(c), matrices, rowBytes, rounded.Pointer, y.Pointer, rows, columns, split));
        if (!QuantizedMatVec.Supports(type)) return new OneTokenProductTiming(type, rows, columns, matrices, bytes * matrices, floatTime, double.NaN, default, [], [], Kernels: backend.IqProducts);

        using var packed = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(activation, columns));
        QuantizedMatVec.LaunchPack(context, kernels, activation, x.Pointer, packed.Pointer, columns);
        bool iq = QuantizedMatVec.HasSharedGridKernels(type);
        MatVecLayout picked = QuantizedMatVec.DefaultLayout(type, (long)rows * matrices, columns, sharedGrids: iq);
        // The plain kernels (or, with `fast`, the fast ones) in each of `layouts`.
        List<(MatVecLayout, double)> EveryLayout(IEnumerable<MatVecLayout> layouts, bool shared, bool fast = false)
        {
            string name = fast ? "matvec_qk" : "matvec_q";
            var timings = new List<(MatVecLayout, double)>();
            foreach (MatVecLayout layout in layouts)
                timings.Add((layout, matrices == 1
                    ? Time(context, repetitions, copies, c => QuantizedMatVec.Launch(context, kernels, type, name, Matrix(c), rowBytes, packed.Pointer, y.Pointer,
                        rows, columns, layout: layout, sharedGrids: shared, fast: fast))
                    : Time(context, repetitions, copies, c => QuantizedMatVec.LaunchGroup(context, kernels, type, "group_" + name, Table(c), 0, matrices, rowBytes,
                        packed.Pointer, columns, 0, y.Pointer, rows, rows, columns, matrices, layout, shared, fast: fast))));
            return timings;
        }
        List<(MatVecLayout, double)> timed = EveryLayout(QuantizedMatVec.Layouts(type), iq);
        double pickedTime = timed.First(l => l.Item1 == picked).Item2;
        if (QuantizedMatVec.HasFastKernels(type))
        {
            // The fast kernel in every layout of its own, the plain one's results bit for bit in the picked one.
            MatVecLayout fastPicked = QuantizedMatVec.FastLayoutFor(type, (long)rows * matrices, columns);
            List<(MatVecLayout, double)> fast = EveryLayout(QuantizedMatVec.FastLayouts(type), shared: false, fast: true);
            return new OneTokenProductTiming(type, rows, columns, matrices, bytes * matrices, floatTime, pickedTime, picked, timed, [], Kernels: backend.IqProducts,
                FastMicroseconds: fast.First(l => l.Item1 == fastPicked).Item2, FastLayout: fastPicked, FastLayouts: fast);
        }
        if (!iq) return new OneTokenProductTiming(type, rows, columns, matrices, bytes * matrices, floatTime, pickedTime, picked, timed, [], Kernels: backend.IqProducts);

        List<(MatVecLayout, double)> globalGrid = EveryLayout(QuantizedMatVec.Layouts(type), shared: false);
        double BlockProducts(IqProductKernels which) => matrices == 1
            ? Time(context, repetitions, copies, c => IqBlockProducts.Launch(context, kernels, type, "matvec_iqb", Matrix(c), rowBytes, packed.Pointer, y.Pointer, rows, columns,
                kernels: which))
            : Time(context, repetitions, copies, c => IqBlockProducts.LaunchSets(context, kernels, type, "group_matvec_iqb", Table(c), 1, 0, matrices, rowBytes,
                packed.Pointer, columns, 0, y.Pointer, rows, rows, columns, matrices, kernels: which));
        double blockTiles = BlockProducts(IqProductKernels.BlockTiles), rowPairs = BlockProducts(IqProductKernels.RowPairs);
        IqProductKernels taken = IqBlockProducts.For(type, backend.IqProducts, rows, matrices, context.Device.Multiprocessors);
        double integerTime = taken switch
        {
            IqProductKernels.RowPairs => rowPairs,
            IqProductKernels.BlockTiles => blockTiles,
            IqProductKernels.SharedGrid => pickedTime,
            _ => globalGrid.First(l => l.Item1 == QuantizedMatVec.LayoutFor(type, (long)rows * matrices, columns)).Item2,
        };
        return new OneTokenProductTiming(type, rows, columns, matrices, bytes * matrices, floatTime, integerTime, picked, timed, globalGrid, blockTiles, taken,
            rowPairs);
    }

    /// <summary><c>group_matvec_T</c> over the table's matrices, every one reading the same rounded input.</summary>
    private static void LaunchFloatGroup(CudaContext context, CudaKernels kernels, GgmlType type, ulong table, int matrices, long rowBytes,
        ulong rounded, ulong y, int rows, int columns, int split)
    {
        int rowsPerBlock = CudaKernels.MatMulWarps / split;
        new KernelArguments().Pointer(table).Pointer(0).Int(matrices).Long(rowBytes)
            .Pointer(rounded).Long(0).Long(0).Pointer(y).Long(rows).Long(0)
            .Int(rows).Int(columns).Int(1).Int(split)
            .Launch(context, kernels.Function("group_matvec_" + CudaKernels.KernelSuffix(type)), "group_matvec",
                (uint)((rows + rowsPerBlock - 1) / rowsPerBlock), 1, (uint)matrices, CudaKernels.MatMulWarps * 32, 0);
    }

    /// <summary>
    /// µs per launch: <paramref name="repetitions"/> launches captured into a graph (so the host's launch rate does not
    /// limit small products, as in a replayed decode step), replayed once to warm up and once between two events.
    /// </summary>
    private static double Time(CudaContext context, int repetitions, int copies, Action<int> launch)
    {
        CudaDriver driver = context.Driver;
        driver.BeginCapture(context.Stream);
        for (int i = 0; i < repetitions; i++) launch(i % copies);
        int result = driver.EndCapture(context.Stream, out IntPtr graph);
        if (result != 0) throw new CudaException("cuStreamEndCapture", result, driver.Describe(result));
        IntPtr exec = IntPtr.Zero, start = IntPtr.Zero, end = IntPtr.Zero;
        try
        {
            exec = driver.InstantiateGraph(graph);
            driver.LaunchGraph(exec, context.Stream);
            start = driver.CreateEvent();
            end = driver.CreateEvent();
            driver.RecordEvent(start, context.Stream);
            driver.LaunchGraph(exec, context.Stream);
            driver.RecordEvent(end, context.Stream);
            driver.SynchronizeEvent(end);
            return driver.ElapsedMilliseconds(start, end) * 1e3 / repetitions;
        }
        finally
        {
            if (start != IntPtr.Zero) driver.DestroyEvent(start);
            if (end != IntPtr.Zero) driver.DestroyEvent(end);
            if (exec != IntPtr.Zero) driver.DestroyGraphExec(exec);
            driver.DestroyGraph(graph);
        }
    }
}
