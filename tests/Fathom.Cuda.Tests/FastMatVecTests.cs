using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Fathom.Cpu;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The fast one-token K-quant products (Kernels/matvec_q.cu's <c>matvec_qk_T</c>, <c>stacked_matvec_qk_T</c>,
/// <c>group_matvec_qk_T</c> for Q4_K and Q6_K; <see cref="QuantizedMatVec.HasFastKernels"/>): without a GPU, the types
/// claimed are the ones the source instantiates and the fast layout keeps the plain layout's blocks per round; on the
/// GPU, in every fast layout they equal <c>matvec_q_T</c> & co. in the plain layout of the same blocks per round bit for
/// bit (single with and without bias and residual, grouped by ids, stacked), on R1's row widths (o 16384, q_b 1536,
/// q_a / kv_a, the dense FFN, the shared experts' gate and up and the output 7168, a down 2048) and odd ones (Q6_K
/// matrices 2 bytes past a word, rows of an odd number of halves), with row counts that leave row groups partly empty;
/// and the backend gives the same bits with <see cref="CudaBackend.FastMatVec"/> on and off, and the CPU's product to
/// rounding.
/// </summary>
public sealed unsafe class FastMatVecTests(GpuFixture gpu) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    public static readonly GgmlType[] FastTypes = [GgmlType.Q4_K, GgmlType.Q6_K];

    /// <summary>
    /// Each fast type at row counts and R1's row widths (scaled-down row counts; 4608, 2304 and 256 odd widths of 18, 9
    /// and 1 blocks).
    /// </summary>
    public static TheoryData<GgmlType, int, int> Shapes()
    {
        var data = new TheoryData<GgmlType, int, int>();
        foreach (GgmlType type in FastTypes)
            foreach ((int rows, int columns) in new[] { (45, 16384), (130, 1536), (37, 7168), (19, 2048), (21, 4608), (9, 2304), (13, 256) })
                data.Add(type, rows, columns);
        return data;
    }

    // On the pinned heap for the whole run: the GPU backend knows uploaded matrices by address.
    private static readonly Dictionary<(GgmlType, int, int, int), byte[]> Weights = [];

    private static byte[] Bytes(GgmlType type, int rows, int columns, int seed)
    {
        lock (Weights)
        {
            if (!Weights.TryGetValue((type, rows, columns, seed), out byte[]? bytes))
            {
                bytes = TestData.Pinned(TestData.QuantizedRows(new Random(HashCode.Combine(type, rows, columns, seed)), TypeTraits.For(type), rows, columns));
                Weights.Add((type, rows, columns, seed), bytes);
            }
            return bytes;
        }
    }

    private static WeightMatrix Matrix(GgmlType type, int rows, int columns, int seed, string name) =>
        WeightMatrix.InPlace(name, type, (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(Bytes(type, rows, columns, seed))), rows, columns);

    /// <summary>How many times the fast kernel's lanes the plain layout of the same blocks per round has (2 for Q4_K, 4 for Q6_K).</summary>
    private static int LaneRatio(GgmlType type) =>
        QuantizedMatVec.LayoutFor(type, 1, 256).Lanes / QuantizedMatVec.FastLayoutFor(type, 1, 256).Lanes;

    /// <summary>Bytes past the device buffer's start a test matrix goes: 2 where the type allows (a word's second half), else 0.</summary>
    private static int Offset(GgmlType type, long rowBytes) => QuantizedMatVec.Aligned(type, 2, rowBytes) ? 2 : 0;

    /// <summary>
    /// Without a GPU: the types claimed to have fast kernels are exactly those matvec_q.cu instantiates the fast kernels
    /// for (FATHOM_MATVEC_QK_KERNELS, which defines all three), each with a plain integer product.
    /// </summary>
    [Theory]
    [MemberData(nameof(TestData.AllTypes), MemberType = typeof(TestData))]
    public void TheFastKernelsCoverTheTypesTheTableClaims(GgmlType type)
    {
        string source = KernelSources.All, suffix = CudaKernels.KernelSuffix(type) ?? "none";
        // matvec_qk_T, stacked_matvec_qk_T and group_matvec_qk_T: the entry points' macro around matvec_qk_rows_T.
        foreach (string kernel in new[] { "matvec_##NAME##_##T", "stacked_matvec_##NAME##_##T", "group_matvec_##NAME##_##T" })
            Assert.Single(Regex.Matches(source, $@"(?m)^{Regex.Escape(kernel)}\("));
        Assert.Single(Regex.Matches(source, @"(?m)^FATHOM_MATVEC_ENTRY_POINTS\(qk, T, TYPE\)$"));
        Assert.Equal(source.Contains($"FATHOM_MATVEC_QK_KERNELS({suffix}, ", StringComparison.Ordinal), QuantizedMatVec.HasFastKernels(type));
        if (QuantizedMatVec.HasFastKernels(type)) Assert.True(QuantizedMatVec.Supports(type));
    }

    /// <summary>
    /// Without a GPU: the fast layout is one of the fast kernels' layouts, takes as many blocks per round as the plain
    /// layout (half its lanes: four threads a block, not eight), at most two rows per thread, and more rows never get fewer.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    public void FastLayoutsKeepThePlainLayoutsBlocksPerRound(GgmlType type)
    {
        MatVecLayout[] all = [.. QuantizedMatVec.FastLayouts(type)];
        int pieces = (int)QuantizedMatVec.PiecesPerRow(type, 256);
        Assert.All(all, l => Assert.True(l.Lanes is >= 4 and <= QuantizedMatVec.Threads && (l.Lanes & (l.Lanes - 1)) == 0 && l.RowsPerThread is 1 or 2, $"layout {l}"));
        foreach (int columns in new[] { 256, 1536, 2048, 4608, 7168, 16384, 18432 })
        {
            MatVecLayout previous = default;
            foreach (long rows in new long[] { 1, 40, 576, 1536, 7168, 8 * 2048, 24576, 129280 })
            {
                MatVecLayout plain = QuantizedMatVec.LayoutFor(type, rows, columns), fast = QuantizedMatVec.FastLayoutFor(type, rows, columns);
                Assert.Contains(fast, all);
                Assert.Equal(plain.Lanes / pieces, fast.Lanes / 4);
                if (previous != default) Assert.True(fast.RowsPerThread >= previous.RowsPerThread, $"{rows}×{columns}: fewer rows per thread for more rows");
                previous = fast;
            }
        }
        Assert.Throws<NotSupportedException>(() => QuantizedMatVec.FastLayoutFor(GgmlType.Q8_0, 1, 256));
    }

    /// <summary>
    /// In every fast layout, single (plain; bias and residual) and grouped (two matrices chosen by device ids) launches
    /// equal the plain kernel's in the layout of the same blocks per round bit for bit, whatever either's rows per thread.
    /// </summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public void EveryFastLayoutEqualsThePlainKernel(GgmlType type, int rows, int columns)
    {
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        CudaKernels kernels = gpu.Kernels;
        byte[] first = Bytes(type, rows, columns, 1), second = Bytes(type, rows, columns, 2);
        long rowBytes = TypeTraits.For(type).Layout.RowBytes(columns);
        int offset = Offset(type, rowBytes), ratio = LaneRatio(type);
        var random = new Random(rows * 7 + columns);
        float[] x = TestData.Gaussian(random, 3 * columns, 2f), bias = TestData.Gaussian(random, rows), residual = TestData.Gaussian(random, rows);

        // The first matrix from the buffer's start plus the offset, the second right after it (2 bytes past a word
        // too when a matrix is an odd number of halves).
        using var weights = new DeviceBuffer(context, 2L * first.Length + 16);
        weights.Upload<byte>(first, offset);
        weights.Upload<byte>(second, offset + first.Length);
        ulong w0 = weights.Pointer + (ulong)offset, w1 = w0 + (ulong)first.Length;
        using var table = new DeviceBuffer(context, 2 * sizeof(ulong));
        table.Upload<ulong>([w0, w1]);
        using var ids = new DeviceBuffer(context, 3 * sizeof(float));
        ids.Upload<float>([1f, 0f, 1f]);
        using var input = new DeviceBuffer(context, 3L * columns * sizeof(float));
        input.Upload<float>(x);
        using var biases = new DeviceBuffer(context, rows * sizeof(float));
        biases.Upload<float>(bias);
        using var packed = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(GgmlType.Q8_K, 3L * columns));
        QuantizedMatVec.LaunchPack(context, kernels, GgmlType.Q8_K, input.Pointer, packed.Pointer, 3L * columns);
        using var y = new DeviceBuffer(context, 3L * rows * sizeof(float));

        float[] Single(MatVecLayout layout, bool fast, bool biasAndResidual)
        {
            float[] result = new float[rows];
            y.Upload<float>(biasAndResidual ? residual : new float[rows]);
            QuantizedMatVec.Launch(context, kernels, type, "test", w0, rowBytes, packed.Pointer, y.Pointer, rows, columns,
                biasAndResidual ? biases.Pointer : 0, biasAndResidual, layout, fast: fast);
            y.Download<float>(result);
            return result;
        }
        float[] Grouped(MatVecLayout layout, bool fast)
        {
            float[] result = new float[3 * rows];
            y.Upload<float>(Enumerable.Repeat(7f, 3 * rows).ToArray());
            QuantizedMatVec.LaunchGroup(context, kernels, type, "test", table.Pointer, ids.Pointer, 2, rowBytes, packed.Pointer, 3L * columns, columns,
                y.Pointer, rows, rows, columns, 3, layout, fast: fast);
            y.Download<float>(result);
            return result;
        }

        foreach (MatVecLayout fastLayout in QuantizedMatVec.FastLayouts(type))
        {
            if (fastLayout.Lanes * ratio > QuantizedMatVec.Threads) continue; // no plain layout of that many lanes to compare with
            var plainLayout = new MatVecLayout(fastLayout.Lanes * ratio, fastLayout.RowsPerThread == 1 ? 4 : 1);
            string what = $"{type} {rows}×{columns}: fast {fastLayout} vs plain {plainLayout}";
            foreach (bool withBias in new[] { false, true })
            {
                float[] plain = Single(plainLayout, fast: false, withBias), fast = Single(fastLayout, fast: true, withBias);
                for (int r = 0; r < rows; r++)
                    Assert.True(TestData.SameFloat(plain[r], fast[r]), $"{what}{(withBias ? " + bias + residual" : "")} row {r}: fast {fast[r]:R}, plain {plain[r]:R}");
            }
            float[] plainGroup = Grouped(plainLayout, fast: false), fastGroup = Grouped(fastLayout, fast: true);
            for (int i = 0; i < plainGroup.Length; i++)
                Assert.True(TestData.SameFloat(plainGroup[i], fastGroup[i]), $"{what} grouped, value {i}: fast {fastGroup[i]:R}, plain {plainGroup[i]:R}");
        }
    }

    /// <summary>
    /// A stacked launch of three matrices (R1's q_a and kv_a widths and odd row counts, the first and last with biases)
    /// in the fast kernel equals the plain stacked launch bit for bit in every fast layout, its rows untouched between.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_K, 7168, 1536, 576, 37)] // MLA's q_a and kv_a
    [InlineData(GgmlType.Q4_K, 2048, 45, 130, 8)]
    [InlineData(GgmlType.Q6_K, 7168, 200, 200, 0)] // a shared expert's gate and up
    [InlineData(GgmlType.Q6_K, 2304, 45, 13, 8)]
    public void StackedFastLaunchesEqualThePlainOnes(GgmlType type, int columns, int rows0, int rows1, int rows2)
    {
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        CudaKernels kernels = gpu.Kernels;
        int[] rows = rows2 > 0 ? [rows0, rows1, rows2] : [rows0, rows1];
        long rowBytes = TypeTraits.For(type).Layout.RowBytes(columns);
        int ratio = LaneRatio(type);
        var random = new Random(columns + rows0);
        using var weights = new DeviceBuffer(context, rows.Sum() * rowBytes + 16);
        long offset = Offset(type, rowBytes);
        var stack = new QuantizedMatVec.StackedMatrix[rows.Length];
        using var biases = new DeviceBuffer(context, 2L * rows.Max() * sizeof(float));
        biases.Upload<float>(TestData.Gaussian(random, 2 * rows.Max()));
        for (int m = 0; m < rows.Length; m++)
        {
            byte[] bytes = Bytes(type, rows[m], columns, 10 + m);
            weights.Upload<byte>(bytes, offset);
            ulong bias = m == 1 ? 0 : biases.Pointer + (ulong)(m == 0 ? 0 : rows.Max() * sizeof(float));
            stack[m] = new QuantizedMatVec.StackedMatrix(weights.Pointer + (ulong)offset, bias, rows[m]);
            offset += bytes.Length;
        }
        using var input = new DeviceBuffer(context, columns * sizeof(float));
        input.Upload<float>(TestData.Gaussian(random, columns));
        using var packed = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(GgmlType.Q8_K, columns));
        QuantizedMatVec.LaunchPack(context, kernels, GgmlType.Q8_K, input.Pointer, packed.Pointer, columns);
        long stride = rows.Max() + 5;
        using var y = new DeviceBuffer(context, 3 * stride * sizeof(float));
        float[] Stacked(MatVecLayout layout, bool fast)
        {
            float[] result = Enumerable.Repeat(3f, (int)(3 * stride)).ToArray();
            y.Upload<float>(result);
            QuantizedMatVec.LaunchStacked(context, kernels, type, "test", stack, rowBytes, packed.Pointer, columns, y.Pointer, stride, layout, fast);
            y.Download<float>(result);
            return result;
        }
        foreach (MatVecLayout fastLayout in QuantizedMatVec.FastLayouts(type))
        {
            if (fastLayout.Lanes * ratio > QuantizedMatVec.Threads) continue;
            var plainLayout = new MatVecLayout(fastLayout.Lanes * ratio, 2);
            float[] plain = Stacked(plainLayout, fast: false), fast = Stacked(fastLayout, fast: true);
            for (int i = 0; i < plain.Length; i++)
                Assert.True(TestData.SameFloat(plain[i], fast[i]), $"{type} {columns} columns, fast {fastLayout} vs plain {plainLayout}, value {i}: fast {fast[i]:R}, plain {plain[i]:R}");
        }
    }

    /// <summary>
    /// Through the backend (its own layouts): single, grouped-by-id and stacked products give the same bits with
    /// <see cref="CudaBackend.FastMatVec"/> on and off, and the CPU backend's product to rounding (relative L2 ≤ 1e-5).
    /// </summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public void TheBackendGivesTheSameBitsWithTheFastKernelsOnAndOff(GgmlType type, int rows, int columns)
    {
        CudaBackend backend = gpu.Backend;
        bool setting = backend.FastMatVec, q6k = backend.FastQ6KProducts;
        var random = new Random(rows + 3 * columns);
        WeightMatrix[] experts = [Matrix(type, rows, columns, 20, $"fast.{type}.{rows}x{columns}.0"), Matrix(type, rows, columns, 21, $"fast.{type}.{rows}x{columns}.1"),
            Matrix(type, rows, columns, 22, $"fast.{type}.{rows}x{columns}.2")];
        float[] x = gpu.Attached(TestData.Gaussian(random, 2 * columns));
        float[] ids = gpu.Attached([2f, 0f]);
        (float[] Single, float[] Experts, float[] Stacked) Run(bool fast)
        {
            backend.FastMatVec = fast;
            backend.FastQ6KProducts = fast;
            float[] single = new float[rows];
            backend.MatMul(experts[1], x.AsSpan(0, columns), single, 1);
            float[] byId = gpu.Attached(Enumerable.Repeat(7f, 2 * rows).ToArray());
            backend.MatMulExperts(experts, ids, x, columns, byId, rows);
            backend.ReadToHost(byId);
            float[] stacked = gpu.Attached(Enumerable.Repeat(5f, 3 * rows).ToArray());
            backend.MatMulGroup(experts, x.AsSpan(0, columns), 0, stacked, rows);
            backend.ReadToHost(stacked);
            return (single, byId, stacked);
        }
        try
        {
            var on = Run(true);
            var off = Run(false);
            string what = $"{type} {rows}×{columns}";
            for (int r = 0; r < rows; r++) Assert.True(TestData.SameFloat(off.Single[r], on.Single[r]), $"{what} row {r}: fast {on.Single[r]:R}, plain {off.Single[r]:R}");
            for (int i = 0; i < 2 * rows; i++) Assert.True(TestData.SameFloat(off.Experts[i], on.Experts[i]), $"{what} experts, value {i}: fast {on.Experts[i]:R}, plain {off.Experts[i]:R}");
            for (int i = 0; i < 3 * rows; i++) Assert.True(TestData.SameFloat(off.Stacked[i], on.Stacked[i]), $"{what} stacked, value {i}: fast {on.Stacked[i]:R}, plain {off.Stacked[i]:R}");
            float[] cpu = new float[rows];
            _cpu.MatMul(experts[1], x.AsSpan(0, columns), cpu, 1);
            Assert.True(TestData.RelativeL2(on.Single, cpu) <= 1e-5, $"{what}: relative L2 {TestData.RelativeL2(on.Single, cpu)} from the CPU");
            _cpu.MatMul(experts[2], x.AsSpan(0, columns), cpu, 1);
            Assert.True(TestData.RelativeL2(on.Experts.AsSpan(0, rows), cpu) <= 1e-5, $"{what}: expert 2's relative L2 from the CPU");
        }
        finally
        {
            backend.FastMatVec = setting;
            backend.FastQ6KProducts = q6k;
        }
    }
}
